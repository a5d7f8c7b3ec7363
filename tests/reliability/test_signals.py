"""Signals: SIGINT (Ctrl-C, sent to the whole process group as a terminal does), SIGTERM
(``scancel``, ``timeout``, node drains) and SIGHUP (a closed ssh session) stop a run cleanly:
no new tasks, the partial summary printed and recorded, the lock released, one line saying how
to resume, exit 128 + the signal number, and no worker tracebacks. The resumed run ends with the
store an undisturbed run writes, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import zarr

from tests.reliability.support import (
    LENSPIPE,
    assert_stores_equal,
    descendants,
    marker_files,
    owned,
    read_lock,
    reap,
    run_cli,
    summary_counts,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(400)


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_stop_signal_ends_the_run_cleanly_and_it_resumes(
    busy_manifest, busy_reference, tmp_path, signum, code
):
    reference, n_batches = busy_reference
    store = tmp_path / "store.zarr"
    config = write_config(tmp_path / "survey.yaml", busy_manifest, store)
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        # its own session: the signal reaches the driver and its workers, never pytest
        process = subprocess.Popen(
            [LENSPIPE, "run", str(config), "--no-progress"],
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    with owned(process):
        wait_for(lambda: len(marker_files(store)) >= 10, 120, "10 operator batches", process)
        tree = descendants(process.pid)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)  # Ctrl-C: the whole foreground group
        else:
            process.send_signal(signum)
        assert process.wait(timeout=120) == code, err_path.read_text()
        assert reap(tree, timeout=30) == [], "worker processes outlived their driver"
    stdout, stderr = out_path.read_text(), err_path.read_text()
    name = signal.Signals(signum).name
    assert f"Stopped early: interrupted by {name}" in stdout, stdout
    assert f"Resume with: lenspipe run {config}" in stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert len(stderr.splitlines()) <= 5, stderr
    counts = summary_counts(stdout)
    assert 0 < counts["operator batches computed"] < n_batches
    assert read_lock(store) is None
    record = zarr.open_group(store, mode="r").attrs["last_run"]
    assert record["stopped"] == f"interrupted by {name}" and record["stop_code"] == code

    resumed = run_cli(config, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts_after = summary_counts(resumed.stdout)
    assert counts_after["failed"] == 0
    assert_stores_equal(store, reference)
