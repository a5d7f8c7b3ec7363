"""Store housekeeping and the console (issue 14, scopes 4 and 5): ``lenspipe rm``, failure reasons
and bad-pixel counts in ``lenspipe status``, ``--allow-incomplete`` for ``plot`` and ``inspect``,
``run --workers``, ``run --resume``, exit codes in the help, ``--version``.

Stores without a cluster are written through the store API (a complete, a prepared and failed
datasets); one survey is run for real to show that a removed dataset is computed again."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
import zarr

import pipeline.cli.store as cli_store
from pipeline.io.store import (
    acquire_run_lock,
    create_store,
    dataset_attrs,
    list_datasets,
    mark_failed,
    write_imaging,
    write_operator_batch,
)
from tests.flow.test_cli import cli, edit_yaml, make_survey, skipped_count
from tests.io.store.support import BATCH, masked, prepare

LONG_ERROR = (
    "dataset 'c_bad': noise_map '/data/survey/c_bad/noise_map.fits' [0]: zero at pixel "
    "(3, 4)\n  and " + "further detail " * 30 + "THE END"
)


@pytest.fixture
def store(tmp_path) -> Path:
    """``a_done`` and ``e_done`` complete, ``b_half`` prepared (1 of 6 operator batches),
    ``c_bad`` failed with its error type recorded, ``d_bad`` failed at discovery (no type)."""
    location = tmp_path / "survey.zarr"
    imaging = masked(seed=3, radius=1.0).apply_sparse_operator(batch_size=BATCH, backend="numpy")
    write_imaging(location, "a_done", imaging, batch_size=BATCH)
    write_imaging(location, "e_done", masked(seed=4, radius=0.8, psf_shape=(3, 3)))
    root = prepare(_Location(location), "b_half", imaging)
    write_operator_batch(root, "b_half", 1, imaging.sparse_operator.values[BATCH : 2 * BATCH])
    mark_failed(root, "c_bad", LONG_ERROR, error_type="InvalidValueError")
    mark_failed(root, "d_bad", "dataset 'd_bad': a duplicate of 'a_done' (manifest row 7)")
    return location


class _Location:
    """What tests/io/store/support.prepare takes: a location and no storage options."""

    def __init__(self, location: Path):
        self.location, self.storage_options = location, None


def set_bad_pixels(location: Path, name: str, counts) -> None:
    """Record bad-pixel counts as the (future) prepare step would: a plain attribute."""
    zarr.open_group(location / "datasets" / name, mode="r+").update_attributes(
        {"bad_pixels": counts}
    )


# ---------------------------------------------------------------------------------------- status
def test_status_gives_each_failure_reason_on_one_line(store, capsys):
    code, out, _ = cli(capsys, "status", store)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{store}: 5 datasets: 2 complete, 2 failed, 1 prepared"
    bad = next(line for line in lines if line.startswith("  c_bad: "))
    assert bad.startswith("  c_bad: failed: InvalidValueError: dataset 'c_bad': noise_map ")
    assert "zero at pixel (3, 4) and further detail" in bad  # the newline became a space
    assert bad.endswith("…") and "THE END" not in bad
    assert len(bad) <= len("  c_bad: failed: ") + cli_store.MESSAGE_WIDTH
    assert "  d_bad: failed: dataset 'd_bad': a duplicate of 'a_done' (manifest row 7)" in lines
    assert "  b_half: prepared" in lines
    assert not any(line.startswith(("  a_done", "  e_done")) for line in lines)
    assert f"`lenspipe rm {store} --failed` removes them" in out


def test_status_long_lists_every_dataset_with_whole_messages(store, capsys):
    code, out, _ = cli(capsys, "status", store, "--long")
    assert code == 0
    assert "  a_done: complete" in out.splitlines()
    bad = next(line for line in out.splitlines() if line.startswith("  c_bad: "))
    assert bad.endswith("THE END")


def test_status_json_keeps_its_shape_and_long_adds_the_reasons(store, capsys):
    code, out, _ = cli(capsys, "status", store, "--json")
    assert code == 0
    assert json.loads(out) == {
        "a_done": "complete",
        "b_half": "prepared",
        "c_bad": "failed",
        "d_bad": "failed",
        "e_done": "complete",
    }
    code, out, _ = cli(capsys, "status", store, "--json", "--long")
    assert code == 0
    found = json.loads(out)
    assert found["c_bad"] == {
        "status": "failed",
        "error_type": "InvalidValueError",
        "error": LONG_ERROR,
        "bad_pixels": None,
    }
    assert found["d_bad"]["error_type"] is None and "duplicate" in found["d_bad"]["error"]
    assert found["a_done"] == {
        "status": "complete",
        "error_type": None,
        "error": None,
        "bad_pixels": None,
    }


def test_status_shows_bad_pixel_counts_where_recorded(store, capsys):
    set_bad_pixels(store, "c_bad", {"nan_data": 3, "zero_noise": 2})
    set_bad_pixels(store, "a_done", 7)
    code, out, _ = cli(capsys, "status", store)
    assert code == 0
    bad = next(line for line in out.splitlines() if line.startswith("  c_bad: "))
    assert bad.endswith("[5 bad pixels (nan_data 3, zero_noise 2)]")
    assert "bad pixels: 7 in 1 complete dataset(s) (--long lists them)" in out
    assert "e_done" not in out  # no counts recorded: nothing shown
    code, out, _ = cli(capsys, "status", store, "--long")
    assert "  a_done: complete [7 bad pixels]" in out.splitlines()
    code, out, _ = cli(capsys, "status", store, "--json", "--long")
    found = json.loads(out)
    assert found["c_bad"]["bad_pixels"] == {"nan_data": 3, "zero_noise": 2}
    assert found["a_done"]["bad_pixels"] == 7


def test_status_lists_a_damaged_dataset_with_its_reason(store, capsys):
    (store / "datasets" / "e_done" / "zarr.json").write_text("{")
    code, out, _ = cli(capsys, "status", store)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("  e_done: "))
    assert line.startswith("  e_done: damaged: dataset 'e_done' cannot be read")
    code, out, _ = cli(capsys, "status", store, "--json", "--long")
    assert json.loads(out)["e_done"]["error_type"] == "DamagedDatasetError"


# ---------------------------------------------------------------------------------------- rm
def test_rm_needs_names_or_failed(store, capsys):
    code, _, err = cli(capsys, "rm", store)
    assert code == 2 and "--failed" in err


def test_rm_dry_run_lists_and_removes_nothing(store, capsys):
    code, out, _ = cli(capsys, "rm", store, "--failed", "b_half", "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        f"{store}: would remove 3 dataset(s):",
        "  b_half (prepared)",
        "  c_bad (failed)",
        "  d_bad (failed)",
    ]
    assert len(list_datasets(store)) == 5


def test_rm_off_a_terminal_needs_yes(store, capsys):
    code, out, err = cli(capsys, "rm", store, "--failed")
    assert code == 2
    assert "  c_bad (failed)" in out  # what it would have removed is listed
    assert "stdin is not a terminal" in err and "--yes" in err
    assert len(list_datasets(store)) == 5
    code, out, _ = cli(capsys, "rm", store, "--failed", "--yes")
    assert code == 0
    assert out.splitlines()[-1] == f"removed 2 dataset(s) from {store}"
    assert list_datasets(store) == {
        "a_done": "complete",
        "b_half": "prepared",
        "e_done": "complete",
    }
    code, out, _ = cli(capsys, "rm", store, "--failed")
    assert code == 0 and "no failed datasets; nothing to remove" in out


@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 1, 5), ("y\n", 0, 4)])
def test_rm_on_a_terminal_asks(store, capsys, monkeypatch, answer, code, left):
    import io

    monkeypatch.setattr(cli_store, "_stdin_is_terminal", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    got, out, err = cli(capsys, "rm", store, "b_half")
    assert got == code
    assert "Remove these 1 dataset(s)? [y/N]" in out
    assert len(list_datasets(store)) == left
    if code:
        assert "Nothing removed." in err


def test_rm_an_unknown_name_removes_nothing(store, capsys):
    code, _, err = cli(capsys, "rm", store, "a_done", "b_hlaf", "--yes")
    assert code == 2
    assert "'b_hlaf' (close: b_half)" in err and "nothing was removed" in err
    assert len(list_datasets(store)) == 5
    code, _, err = cli(capsys, "rm", store, "../x", "--yes")
    assert code == 2 and "not a safe store key" in err


def test_rm_is_refused_while_a_run_holds_the_store(store, capsys):
    lock = acquire_run_lock(create_store(store), "20261201T000000Z-abcdef", settle=0)
    try:
        code, _, err = cli(capsys, "rm", store, "c_bad", "--yes")
    finally:
        lock.release()
    assert code == 2
    assert "in use by run 20261201T000000Z-abcdef" in err and "pid" in err
    assert "c_bad" in list_datasets(store)


# ---------------------------------------------------------------------------------------- inspect, plot
def test_inspect_a_failed_dataset(store, capsys):
    code, out, _ = cli(capsys, "inspect", store, "c_bad")
    assert code == 0
    assert "    error_type: InvalidValueError" in out
    assert (
        "        arrays: not read (status 'failed'; --allow-incomplete reads what is stored)" in out
    )


def test_inspect_reads_arrays_of_complete_and_with_the_flag_incomplete_datasets(store, capsys):
    code, out, _ = cli(capsys, "inspect", store, "a_done")
    assert code == 0
    arrays = out.splitlines()[-1]
    assert arrays.startswith("        arrays: (24, 28) frame, ")
    assert "batches done" in arrays and "6/6" in arrays
    code, out, _ = cli(capsys, "inspect", store, "b_half")
    assert "arrays: not read (status 'prepared'" in out
    code, out, _ = cli(capsys, "inspect", store, "b_half", "--allow-incomplete")
    assert code == 0
    assert out.splitlines()[-1].endswith("1/6 batches done")
    code, out, _ = cli(capsys, "inspect", store, "d_bad", "--allow-incomplete")
    assert code == 0 and "arrays: cannot be read: " in out


def test_plot_an_incomplete_dataset_needs_the_flag(store, tmp_path, capsys):
    output = tmp_path / "half.png"
    code, _, err = cli(capsys, "plot", store, "b_half", "-o", output, "--dpi", 40)
    assert code == 2
    assert "status 'prepared'" in err and "--allow-incomplete" in err
    assert not output.exists()
    code, out, _ = cli(
        capsys, "plot", store, "b_half", "-o", output, "--dpi", 40, "--allow-incomplete"
    )
    assert code == 0, out
    assert output.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------- run
def test_a_removed_dataset_is_computed_again_by_the_next_run(tmp_path, capsys):
    config = make_survey(tmp_path, n=3)
    store = tmp_path / "survey.zarr"
    assert cli(capsys, "run", config, "--no-progress")[0] == 0
    token = dataset_attrs(store, "lens_00002")["token"]
    other = (store / "datasets" / "lens_00001" / "data" / "c" / "0" / "0").read_bytes()
    code, out, _ = cli(capsys, "rm", store, "lens_00002", "--yes")
    assert code == 0
    assert list_datasets(store) == {"lens_00001": "complete", "lens_00003": "complete"}
    assert (store / "datasets" / "lens_00001" / "data" / "c" / "0" / "0").read_bytes() == other
    code, out, err = cli(capsys, "run", config, "--no-progress")
    assert code == 0, err
    assert skipped_count(out) == 2
    assert list_datasets(store) == dict.fromkeys(
        ["lens_00001", "lens_00002", "lens_00003"], "complete"
    )
    assert dataset_attrs(store, "lens_00002")["token"] != token


def test_workers_overrides_the_local_cluster(tmp_path, capsys):
    config = make_survey(tmp_path, n=1)
    code, out, _ = cli(capsys, "run", config, "--dry-run", "--workers", 3)
    assert code == 0
    assert "cluster: embedded LocalCluster, 3 worker process(es)" in out
    code, out, _ = cli(capsys, "run", config, "--dry-run")
    assert "cluster: embedded LocalCluster, 1 worker process(es)" in out  # the config's
    code, _, err = cli(capsys, "run", config, "--workers", 0)
    assert code == 2 and "--workers" in err


@pytest.mark.parametrize(
    ("cluster", "words"),
    [
        ({"kind": "address", "address": "tcp://127.0.0.1:1"}, ["tcp://127.0.0.1:1", "outside"]),
        (
            {"kind": "slurm", "jobs": 2, "options": {"cores": 4, "processes": 2}},
            ["cluster.jobs", "options.processes", "2 x 2 = 4"],
        ),
    ],
)
def test_workers_is_refused_for_clusters_lenspipe_does_not_start_workers_in(
    tmp_path, capsys, cluster, words
):
    config = edit_yaml(make_survey(tmp_path, n=1), cluster=cluster)
    code, _, err = cli(capsys, "run", config, "--workers", 4, "--dry-run")
    assert code == 2
    assert "--workers 4" in err
    for word in words:
        assert word in err


def test_resume_is_the_default_and_contradicts_overwrite(tmp_path, capsys):
    config = make_survey(tmp_path, n=1)
    code, _, err = cli(capsys, "run", config, "--resume", "--overwrite")
    assert code == 2 and "--resume" in err and "--overwrite" in err
    assert not (tmp_path / "survey.zarr").exists()


# ---------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_lists_the_exit_codes(capsys, args):
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert "Exit codes:" in out
    for start in ("0    every dataset complete", "3    the run finished", "2    usage"):
        assert start in out
    assert "1    unexpected error" in out and "130  stopped by SIGINT" in out
    assert "143 by SIGTERM, 129 by SIGHUP" in out


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out == f"lenspipe {version('lenspipe')}\n"


def test_help_of_every_command_exits_0(capsys):
    for command in ("simulate", "validate", "run", "demo", "status", "inspect", "plot", "rm"):
        code, out, _ = cli(capsys, command, "--help")
        assert code == 0 and f"Usage: lenspipe {command}" in out
