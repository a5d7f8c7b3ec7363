"""What a worker process sets up (pipeline/flow/worker.py), each case in a fresh Python process so
that this one's environment, Zarr config, Blosc threads and signal handlers are untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.flow.worker import WORKER_DASK_CONFIG, WORKER_ENVIRONMENT


def _run(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (the worker's variables removed from its environment,
    then ``env`` added); it prints one JSON object, returned."""
    clean = {k: v for k, v in os.environ.items() if k not in WORKER_ENVIRONMENT}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_configure_worker_sets_thread_limits_and_zarr_config():
    found = _run(
        """
        import json, os
        import numcodecs.blosc
        import zarr
        from pipeline.flow.worker import WORKER_ENVIRONMENT, configure_worker

        before = {k: os.environ.get(k) for k in WORKER_ENVIRONMENT}
        numcodecs.blosc.set_nthreads(4)
        configure_worker()
        configure_worker()  # every task calls it: the second call changes nothing
        print(json.dumps({
            "before": before,
            "after": {k: os.environ.get(k) for k in WORKER_ENVIRONMENT},
            "concurrency": zarr.config.get("async.concurrency"),
            "max_workers": zarr.config.get("threading.max_workers"),
            "blosc": numcodecs.blosc.get_nthreads(),
        }))
        """,
        env={"OMP_NUM_THREADS": "3"},  # set by the user: kept
    )
    assert found["before"] == {k: ("3" if k == "OMP_NUM_THREADS" else None) for k in found["after"]}
    assert found["after"] == {**WORKER_ENVIRONMENT, "OMP_NUM_THREADS": "3"}
    assert found["after"]["NUMBA_NUM_THREADS"] == "1" and found["after"]["MKL_NUM_THREADS"] == "1"
    assert found["concurrency"] == 8 and found["max_workers"] == 1
    assert found["blosc"] == 1


def test_thread_limits_reach_numba_loaded_after_configure_worker():
    found = _run(
        """
        import json
        from pipeline.flow.worker import configure_worker

        configure_worker()
        import numba

        print(json.dumps({"numba": numba.config.NUMBA_NUM_THREADS}))
        """
    )
    assert found == {"numba": 1}


_READ_CONFIG = """
    import json
    import dask
    import distributed  # its defaults, which the environment overrides
    from distributed.nanny import _get_env_variables
    from pipeline.flow.worker import WORKER_DASK_CONFIG

    found = {key: dask.config.get(key) for key in WORKER_DASK_CONFIG}
    # what a nanny puts in its worker's environment
    found["spawn"] = _get_env_variables("distributed.nanny.pre-spawn-environ")
    print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def dask_config() -> tuple[dict, dict]:
    """The config read by a process without, then with, the worker environment."""
    return _run(_READ_CONFIG), _run(_READ_CONFIG, env=WORKER_ENVIRONMENT)


@pytest.mark.parametrize(
    "key",
    [
        "distributed.worker.profile.enabled",
        # a regression test: Dask lowercases keys below a variable's path, so the variable
        # ..._PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_ once set "malloc_trim_threshold_" and
        # job-script workers kept MALLOC_TRIM_THRESHOLD_=65536
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_",
    ],
)
def test_worker_environment_carries_the_worker_dask_config(key, dask_config):
    """A worker started by a job script gets the Dask settings of the embedded cluster's
    workers through its environment alone (for the nanny's environment: the variable is not in
    what the nanny hands its worker)."""
    default, found = dask_config
    assert default[key] != WORKER_DASK_CONFIG[key]  # without the environment: Dask's default
    assert found[key] == WORKER_DASK_CONFIG[key]
    if key.startswith("distributed.nanny.pre-spawn-environ."):
        assert key.rsplit(".", 1)[1] not in found["spawn"]


def test_dask_setup_ignores_sigint_in_the_main_thread_only():
    found = _run(
        """
        import json, signal, threading
        from pipeline.flow.worker import dask_setup

        thread = threading.Thread(target=dask_setup, args=(None,))
        thread.start()
        thread.join()
        from_thread = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        dask_setup(None)
        print(json.dumps({
            "unchanged_from_a_thread": from_thread,
            "ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
            "sigterm_default": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
        }))
        """
    )
    assert found == {"unchanged_from_a_thread": True, "ignored": True, "sigterm_default": True}


def _has_heartbeat_filter() -> bool:
    import logging

    from pipeline.flow.worker import ClosingHeartbeatFilter

    return any(
        isinstance(f, ClosingHeartbeatFilter)
        for f in logging.getLogger("distributed.worker").filters
    )


def test_a_heartbeat_cut_off_by_closing_is_dropped_and_one_while_running_is_kept():
    import logging
    from types import SimpleNamespace

    from distributed.core import Status

    from pipeline.flow.cluster import cluster_client
    from pipeline.flow.config import LocalClusterConfig
    from pipeline.flow.worker import HEARTBEAT_FAILURE, ClosingHeartbeatFilter

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(
            "distributed.worker", logging.ERROR, __file__, 1, message, (), None
        )

    worker = SimpleNamespace(status=Status.running)
    keeps = ClosingHeartbeatFilter(worker).filter
    assert keeps(record(HEARTBEAT_FAILURE + "."))  # a lost scheduler while running: shown
    for status in (Status.closing, Status.closed, Status.closing_gracefully, Status.failed):
        worker.status = status
        assert not keeps(record(HEARTBEAT_FAILURE + "."))
        assert keeps(record("Compute Failed"))  # every other record is kept
    # the embedded cluster's workers run the preload that installs it
    with cluster_client(LocalClusterConfig(n_workers=1)) as client:
        assert list(client.run(_has_heartbeat_filter).values()) == [True]
