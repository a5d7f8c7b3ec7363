"""The embedded cluster's worker settings, and the optional Dask performance report."""

from __future__ import annotations

import os

import yaml

from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig, load_config
from pipeline.flow.run import run_survey
from pipeline.flow.simulate import simulate_survey


def _worker_settings() -> dict:
    import dask

    return {
        "env": {
            key: os.environ.get(key)
            for key in (
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS",
                "XLA_FLAGS",
                "MALLOC_TRIM_THRESHOLD_",
            )
        },
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "pid": os.getpid(),
    }


def test_local_workers_are_single_threaded_processes():
    with cluster_client(LocalClusterConfig(n_workers=2)) as client:
        settings = list(client.run(_worker_settings).values())
        threads = client.nthreads()
    assert len(settings) == 2 and set(threads.values()) == {1}
    assert len({s["pid"] for s in settings}) == 2 and os.getpid() not in {
        s["pid"] for s in settings
    }
    for s in settings:
        env = s["env"]
        assert (
            env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == "1"
        )
        assert "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]
        # Dask's nanny would set it to 65536, slowing large allocations (see WORKER_DASK_CONFIG)
        assert env["MALLOC_TRIM_THRESHOLD_"] is None
        assert s["profile"] is False


def test_performance_report_is_written(tmp_path):
    config_path = simulate_survey(tmp_path, 2, seed=3, shape_range=(40, 44))
    data = yaml.safe_load(config_path.read_text())
    data["cluster"] = {"kind": "local", "n_workers": 1}
    data["run"].update({"performance_report": "report.html", "progress": False})
    config_path.write_text(yaml.safe_dump(data))
    summary = run_survey(load_config(config_path))
    assert summary.exit_code == 0 and summary.complete == 2
    report = tmp_path / "report.html"
    assert report.stat().st_size > 10_000
    assert "Dask Performance Report" in report.read_text(errors="replace")
