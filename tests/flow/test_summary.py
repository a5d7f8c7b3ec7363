"""The record of a run (pipeline/flow/summary.py): :class:`RunSummary` counts, times, exit code,
record and table (the progress display: tests/flow/test_progress.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.flow.summary import RunSummary
from pipeline.flow.tasks import BatchResult, PrepareResult
from tests.reliability.support import summary_counts

# the record of a run written by lenspipe at d261856: the field names of a stored summary
LEGACY_STORE = Path(__file__).resolve().parents[1] / "data" / "store_d261856" / "survey.zarr"


def _summary(**counts) -> RunSummary:
    return RunSummary(
        run_id="r1", store="/data/s.zarr", started="2026-01-01T00:00:00+00:00", **counts
    )


def _batch(index: int, cpu: float, kernel: float, write: float) -> BatchResult:
    return BatchResult(
        name="lens",
        batch_index=index,
        n_rows=10,
        cpu_seconds=cpu,
        kernel_seconds=kernel,
        write_seconds=write,
        wall_seconds=kernel + write,
    )


def _prepared(first: BatchResult | None) -> PrepareResult:
    return PrepareResult(
        name="lens",
        metadata={},
        n_batches=3,
        sources=[],
        cpu_seconds=2.0,
        wall_seconds=3.0,
        first_batch=first,
        load_seconds=1.25,
        write_seconds=0.5,
    )


def test_prepared_and_batch_results_add_up():
    summary = _summary()
    first = _batch(0, cpu=0.25, kernel=0.375, write=0.0)
    summary.add_prepared(_prepared(first))
    # the first batch's CPU time is part of the prepare task's, and counted once, as a batch
    assert summary.cpu_seconds == pytest.approx(1.75)
    assert summary.prepare_seconds == 1.25 and summary.write_seconds == 0.5
    assert summary.shards_computed == 0 and summary.kernel_seconds == 0.0
    for result in (first, _batch(1, cpu=0.5, kernel=0.25, write=0.125)):
        summary.add_batch(result)
    assert summary.shards_computed == 2
    assert summary.cpu_seconds == pytest.approx(1.75 + 0.25 + 0.5)
    assert summary.kernel_seconds == pytest.approx(0.625)
    assert summary.write_seconds == pytest.approx(0.625)

    without = _summary()
    without.add_prepared(_prepared(None))
    assert without.cpu_seconds == 2.0 and without.prepare_seconds == 1.25


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({}, 0),
        ({"failed": 2, "complete": 5}, 3),
        ({"failed": 1, "stop_code": 143, "stopped": "interrupted by SIGTERM"}, 143),
        ({"stop_code": 1, "stopped": "no Dask worker was alive"}, 1),
    ],
)
def test_exit_code(counts, code):
    assert _summary(**counts).exit_code == code


def test_record_keeps_the_field_names_of_stored_runs():
    recorded = json.loads((LEGACY_STORE / "zarr.json").read_text())["attributes"]["last_run"]
    summary = RunSummary(**recorded)
    assert summary.to_dict() == recorded
    assert json.loads(json.dumps(summary.to_dict())) == recorded  # JSON as it is

    fresh = _summary(failures=[{"name": "a", "message": "m"}]).to_dict()
    assert list(fresh) == list(recorded)
    assert fresh["failures"] == [{"name": "a", "message": "m"}]
    assert fresh["stopped"] is None and fresh["shards_computed"] == 0


def test_table_rows():
    summary = _summary(
        datasets_total=9,
        complete=4,
        skipped_complete=2,
        resumed=1,
        changed_inputs=1,
        rebuilt=0,
        failed=2,
        shards_computed=17,
        shards_skipped=5,
        shards_damaged=1,
        tasks_timed_out=3,
        cpu_seconds=12.34,
        prepare_seconds=1.0,
        kernel_seconds=2.3,
        write_seconds=0.5,
        wall_seconds=7.06,
        failures=[{"name": "lens_a", "message": "dataset 'lens_a': bad PSF"}],
        stopped="interrupted by SIGINT",
        stop_code=130,
    )
    table = summary.table()
    lines = table.splitlines()
    assert lines[0] == "Run r1 -> /data/s.zarr"
    assert summary_counts(table) == {
        "datasets": 9,
        "complete (this run)": 4,
        "skipped (already complete)": 2,
        "resumed (prepared before)": 1,
        "changed inputs (prepared again)": 1,
        "damaged (prepared again)": 0,
        "failed": 2,
        "operator batches computed": 17,
        "operator batches skipped (done before)": 5,
        "operator batches found damaged (redone)": 1,
        "tasks past run.task_timeout": 3,
    }
    rows = [re.match(r"^  ( *\S.*?)  +(\S+)$", line) for line in lines[1:18]]
    times = {row[1].strip(): row[2] for row in rows if "[s]" in row[1]}
    assert times == {
        "task CPU time [s]": "12.3",
        "task wall time [s]": "3.8",
        "loading and preparing [s]": "1.0",
        "operator kernels [s]": "2.3",
        "store writes [s]": "0.5",
        "wall time [s]": "7.1",
    }
    # one row per line, every value starting in one column
    assert len({row.start(2) for row in rows}) == 1
    assert lines[-3:] == [
        "Failures:",
        "  lens_a: dataset 'lens_a': bad PSF",
        "Stopped early: interrupted by SIGINT",
    ]
    plain = _summary().table()
    assert "Failures:" not in plain and "Stopped early" not in plain


def test_masked_bad_pixels_are_listed_and_recorded():
    summary = _summary()
    clean = _prepared(None)
    summary.add_prepared(clean)
    assert "bad_pixels" not in summary.to_dict()  # as runs recorded before
    spoiled = PrepareResult(
        name="lens_7",
        metadata={"bad_pixels": {"nonfinite_data": 3, "unusable_noise": 1}},
        n_batches=1,
        sources=[],
        cpu_seconds=1.0,
        wall_seconds=1.0,
    )
    summary.add_prepared(spoiled)
    none_masked = PrepareResult(
        name="lens_8",
        metadata={"bad_pixels": {"nonfinite_data": 0, "unusable_noise": 0}},
        n_batches=1,
        sources=[],
        cpu_seconds=1.0,
        wall_seconds=1.0,
    )
    summary.add_prepared(none_masked)
    assert summary.to_dict()["bad_pixels"] == [
        {"name": "lens_7", "nonfinite_data": 3, "unusable_noise": 1}
    ]
    assert "  lens_7: nonfinite_data 3, unusable_noise 1" in summary.table().splitlines()
    assert RunSummary(**summary.to_dict()).to_dict() == summary.to_dict()
