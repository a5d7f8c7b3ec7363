"""Bad configurations: unknown keys, wrong types, an unreachable scheduler and an output store
that cannot be written all end ``lenspipe run`` with exit code 2 and a one-line reason naming the
key or location (no traceback), quickly, and without leaving anything behind."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.io.store import list_datasets
from pipeline.mock import simulate_survey
from tests.reliability.support import LENSPIPE, read_lock


@pytest.fixture
def survey(tmp_path) -> Path:
    """A one-lens survey (one local worker); returns its config path."""
    return simulate_survey(tmp_path / "survey", 1, seed=2, shape_range=(40, 48), n_workers=1)


def _edit(config: Path, edit) -> Path:
    data = yaml.safe_load(config.read_text())
    edit(data)
    config.write_text(yaml.safe_dump(data))
    return config


def _run(config: Path, capsys) -> tuple[int, str, float]:
    capsys.readouterr()
    start = time.monotonic()
    code = main(["run", str(config), "--no-progress"])
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err, elapsed


def test_unknown_keys_exit_2_naming_each_key(survey, capsys):
    def edit(data):
        data["outputs"] = data["output"]  # a typo of a section
        data["sparse_operator"]["batchsize"] = 100  # a typo of a key

    code, err, _ = _run(_edit(survey, edit), capsys)
    assert code == 2
    assert "outputs: unknown key" in err
    assert "sparse_operator.batchsize: unknown key" in err
    assert str(survey) in err
    assert not (survey.parent / "survey.zarr").exists()  # nothing was started


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("run", "retries", "many", "run.retries"),
        ("run", "max_tasks_in_flight", 0, "run.max_tasks_in_flight"),
        ("sparse_operator", "batch_size", -3, "sparse_operator.batch_size"),
        ("sparse_operator", "batch_size", "automatic", "sparse_operator.batch_size"),
        ("sparse_operator", "memory_budget_mb", "lots", "sparse_operator.memory_budget_mb"),
        ("sparse_operator", "backend", "cuda", "sparse_operator.backend"),
        ("mask", "radius", "big", "mask.radius"),
        ("cluster", "n_workers", 1.5, "cluster.n_workers"),
    ],
)
def test_wrong_types_exit_2_naming_the_key(survey, capsys, section, key, value, expected):
    code, err, _ = _run(_edit(survey, lambda d: d[section].update({key: value})), capsys)
    assert code == 2
    assert f"{expected}:" in err and repr(value) in err
    assert not (survey.parent / "survey.zarr").exists()


def test_wrong_type_through_the_console_script(survey):
    """The same through the installed ``lenspipe`` command (a real process and exit status)."""
    _edit(survey, lambda d: d.update(pixel_scales="tiny"))
    done = subprocess.run(
        [LENSPIPE, "run", str(survey), "--no-progress"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "pixel_scales:" in done.stderr and "'tiny'" in done.stderr
    assert "Traceback" not in done.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once we return: connections are refused


@pytest.mark.parametrize(
    "address",
    [
        pytest.param(f"tcp://127.0.0.1:{_closed_port()}", id="refused"),
        # TEST-NET-1 (RFC 5737): never routed, so the connection hangs until the timeout
        pytest.param("tcp://192.0.2.1:8786", id="blackhole"),
    ],
)
def test_unreachable_scheduler_exits_2_within_its_timeout(survey, capsys, address):
    cluster = {"kind": "address", "address": address, "timeout": 3}
    code, err, elapsed = _run(_edit(survey, lambda d: d.update(cluster=cluster)), capsys)
    assert code == 2
    assert elapsed < 20
    assert address in err and "within 3 s" in err and "cluster.address" in err
    store = survey.parent / "survey.zarr"
    assert read_lock(store) is None  # the failed run released its lock
    assert list_datasets(store) == {}  # no dataset was begun


@pytest.mark.parametrize("kind", ["regular-file", "under-a-file", "proc"])
def test_unwritable_store_exits_2_with_a_clear_message(survey, capsys, kind, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    location = {
        "regular-file": blocker,
        "under-a-file": blocker / "survey.zarr",
        "proc": Path("/proc/lenspipe-test.zarr"),  # a pseudo filesystem: no new entries
    }[kind]
    code, err, _ = _run(_edit(survey, lambda d: d.update(output={"store": str(location)})), capsys)
    assert code == 2
    assert err.startswith("error: cannot ") and f"Zarr store at '{location}'" in err
    assert blocker.read_text() == "a regular file"


def test_store_that_is_another_zarr_group_exits_2(survey, capsys, tmp_path):
    import zarr

    other = tmp_path / "other.zarr"
    zarr.create_array(other / "x", shape=(3,), dtype="f8")
    zarr.open_group(other, mode="a")
    code, err, _ = _run(_edit(survey, lambda d: d.update(output={"store": str(other)})), capsys)
    assert code == 2
    assert "not a lenspipe store" in err


# ---------------------------------------------------------------------------------------- bounds
def _console(config: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LENSPIPE, "run", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _laughs(levels: int = 9, width: int = 10) -> str:
    """YAML "billion laughs": &l9 stands for 10**10 strings through 90 aliases."""
    lines = ["laughs:", "  - &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"  - &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


HUGE = [
    # (edit of the config, the key the message must name); each of these once hung a run or
    # was accepted: every number now has an upper bound
    (lambda d: d["run"].update(retries=1e23), "run.retries"),
    (lambda d: d["run"].update(task_timeout=0), "run.task_timeout"),
    (lambda d: d["run"].update(max_tasks_in_flight=10**30), "run.max_tasks_in_flight"),
    (lambda d: d["cluster"].update(start_timeout=-1), "cluster.start_timeout"),
    (lambda d: d["cluster"].update(n_workers=1e308), "cluster.n_workers"),
    (lambda d: d.update(over_sampling={"kind": "uniform", "lp": 10**6}), "over_sampling.lp"),
    (lambda d: d["mask"].update(radius=1e308), "mask.radius"),
    (lambda d: d.update(pixel_scales=1e300), "pixel_scales"),
    (lambda d: d["sparse_operator"].update(batch_size=2**62), "sparse_operator.batch_size"),
]


@pytest.mark.parametrize(("edit", "key"), HUGE, ids=[key for _, key in HUGE])
def test_huge_or_zero_numbers_exit_2_naming_the_key(survey, edit, key):
    started = time.monotonic()
    done = _console(_edit(survey, edit))
    assert done.returncode == 2, done.stderr
    assert f"{key}:" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr) < 2000
    assert time.monotonic() - started < 60
    assert not (survey.parent / "survey.zarr").exists()


def test_huge_scheduler_timeout_exits_2(survey):
    """``cluster.timeout: 1e308`` (YAML reads it as a string, pydantic as a float)."""
    data = yaml.safe_load(survey.read_text())
    data["cluster"] = {"kind": "address", "address": "tcp://127.0.0.1:1", "timeout": 0}
    survey.write_text(yaml.safe_dump(data).replace("timeout: 0", "timeout: 1e308"))
    done = _console(survey)
    assert done.returncode == 2, done.stderr
    assert (
        "cluster.timeout: Input should be less than or equal to 3600 (got '1e308')" in done.stderr
    )


@pytest.mark.parametrize("where", ["mask.radius", "cluster.options", "unknown key"])
def test_yaml_alias_bomb_exits_2_quickly(survey, where):
    """A "billion laughs" (10**10 strings through 90 aliases) in a value that fails validation,
    in an ``Any`` mapping, or under an unknown key: refused from the YAML node graph (no value is
    built or printed), exit 2 within seconds and with bounded memory."""
    data = yaml.safe_load(survey.read_text())
    data["cluster"] = {"kind": "slurm", "options": {"cores": 1}}
    text = yaml.safe_dump(data, sort_keys=False)
    if where == "mask.radius":
        text = re.sub(r"radius: [0-9.]+", "radius: *l9", text)
    elif where == "cluster.options":
        text = text.replace("cores: 1", "cores: 1\n    extra: *l9")
    else:
        text += "spare: *l9\n"
    assert "*l9" in text
    survey.write_text(_laughs() + text)
    done = _console(survey, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "YAML aliases that expand to more than 100000 values (limit 100000)" in done.stderr
    assert str(survey) in done.stderr and len(done.stderr) < 2000


def test_store_in_the_config_folder_exits_2_and_deletes_nothing(survey):
    """``output.store: .`` beside the inputs: refused before anything is opened."""
    before = sorted(p.relative_to(survey.parent) for p in survey.parent.rglob("*"))
    done = _console(_edit(survey, lambda d: d.update(output={"store": "."})))
    assert done.returncode == 2, done.stderr
    assert "output.store: the store resolves to the config file's folder" in done.stderr
    assert sorted(p.relative_to(survey.parent) for p in survey.parent.rglob("*")) == before
