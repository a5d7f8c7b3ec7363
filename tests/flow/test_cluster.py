"""The embedded cluster's worker settings, the optional Dask performance report, and TLS
credentials for every kind of cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.exc import ClusterError, ConfigError
from pipeline.flow.cluster import cluster_client, cluster_security
from pipeline.flow.config import (
    AddressCluster,
    JobqueueCluster,
    LocalClusterConfig,
    TlsFiles,
    load_config,
)
from pipeline.flow.run import run_survey
from pipeline.mock import simulate_survey


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


# ---------------------------------------------------------------------------------------- security
def _write_credentials(security, folder: Path) -> dict[str, Path]:
    """The PEM texts of a ``Security.temporary()`` as files (a CA, a cert and its key)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ca_file": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca_file"].write_text(security.tls_ca_file)
    files["cert"].write_text(security.tls_client_cert)
    files["key"].write_text(security.tls_client_key)
    return files


def test_cluster_security_settings(tmp_path):
    from distributed.security import Security

    assert cluster_security(LocalClusterConfig()) is None
    temporary = cluster_security(LocalClusterConfig(security="tls"))
    assert isinstance(temporary, Security) and temporary.require_encryption
    assert "BEGIN CERTIFICATE" in temporary.tls_ca_file  # made for this cluster, in memory

    files = _write_credentials(Security.temporary(), tmp_path / "tls")
    config = AddressCluster(address="tls://127.0.0.1:1", security=TlsFiles(**files))
    security = cluster_security(config)
    assert security.require_encryption
    assert security.tls_ca_file == str(files["ca_file"])
    for role in ("client", "scheduler", "worker"):
        assert getattr(security, f"tls_{role}_cert") == str(files["cert"])
        assert getattr(security, f"tls_{role}_key") == str(files["key"])

    files["key"].unlink()
    with pytest.raises(ConfigError, match=r"cluster.security.key: no such file '.*key.pem'"):
        cluster_security(config)


def test_address_cluster_with_tls_files(tmp_path):
    """Join a TLS scheduler with the files of its credentials; files of another cluster are
    refused (exit 2 through ClusterError, naming cluster.security)."""
    from distributed import LocalCluster
    from distributed.security import Security

    credentials = Security.temporary()
    files = _write_credentials(credentials, tmp_path / "ours")
    strangers = _write_credentials(Security.temporary(), tmp_path / "theirs")
    with LocalCluster(
        n_workers=1,
        processes=False,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        security=credentials,
    ) as scheduler:
        address = scheduler.scheduler_address
        assert address.startswith("tls://")
        config = AddressCluster(address=address, security=TlsFiles(**files), timeout=10)
        with cluster_client(config) as client:
            assert client.submit(pow, 2, 5).result() == 32
        wrong = AddressCluster(address=address, security=TlsFiles(**strangers), timeout=3)
        with pytest.raises(ClusterError, match="files of cluster.security"):
            with cluster_client(wrong):
                pass


def test_jobqueue_cluster_with_tls_files(tmp_path):
    """dask-jobqueue gets the Security: its scheduler speaks tls://, each worker's command line
    names the files, and the scheduler's dashboard is bound to loopback."""
    pytest.importorskip("dask_jobqueue")
    from distributed.security import Security

    from pipeline.flow.cluster import _jobqueue_cluster

    files = _write_credentials(Security.temporary(), tmp_path / "tls")
    config = JobqueueCluster(
        kind="slurm", options={"cores": 2, "memory": "4GB"}, security=TlsFiles(**files)
    )
    cluster = _jobqueue_cluster(config)
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://")
        assert cluster.scheduler.http_server.address == "127.0.0.1"
    finally:
        cluster.close()
    assert "--protocol tls://" in script
    for flag, key in (("--tls-ca-file", "ca_file"), ("--tls-cert", "cert"), ("--tls-key", "key")):
        assert f"{flag} {files[key]}" in script


def test_importing_dask_jobqueue_keeps_the_sigint_handler():
    """dask-jobqueue replaces the SIGINT handler with ``sys.exit()`` when imported (a Ctrl-C of
    a SLURM run then ended it with status 0 and no summary); the run's handler stays in place.
    In a fresh interpreter: this one may have imported dask_jobqueue already."""
    code = (
        "import signal, sys\n"
        "def mine(signum, frame): pass\n"
        "signal.signal(signal.SIGINT, mine)\n"
        "from pipeline.flow.cluster import _import_jobqueue\n"
        "_import_jobqueue('slurm')\n"
        "assert 'dask_jobqueue.runner' in sys.modules\n"
        "assert signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGINT)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_missing_submit_command_ends_the_run(tmp_path, monkeypatch, capsys):
    """``kind: slurm`` where there is no ``sbatch``: exit 2 at once, naming the command (the run
    used to wait ``cluster.start_timeout`` for workers). The SLURM tests
    (tests/flow/test_slurm.py) check a failing ``sbatch`` on a real cluster."""
    from pipeline.cli import main

    config_path = simulate_survey(tmp_path / "mock", 1, seed=3, shape_range=(40, 44))
    data = yaml.safe_load(config_path.read_text())
    data["cluster"] = {"kind": "slurm", "options": {"cores": 1, "memory": "1GB"}}
    data["run"]["progress"] = False
    config_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("PATH", str(tmp_path / "no-commands"))  # no sbatch on it
    assert main(["run", str(config_path)]) == 2
    error = capsys.readouterr().err
    assert "cluster.kind slurm: cannot run sbatch" in error
    assert "No such file or directory" in error and "nothing was computed" in error
