"""Exposure of the embedded cluster (issue 11, scope 8): the scheduler, nannies, workers and
dashboard listen on the loopback interface only; ``dashboard: false`` leaves no HTTP port open;
``security: tls`` gives the cluster temporary TLS credentials and its scheduler refuses any
process without them. Real clusters and real ``lenspipe run`` processes, observed from outside
through the kernel's socket tables (psutil)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig
from pipeline.mock import simulate_survey
from tests.reliability.support import LENSPIPE, descendants, owned

LOOPBACK = {"127.0.0.1", "::1"}
N_WORKERS = 2


def listening(pid: int) -> dict[int, set[tuple[str, int]]]:
    """The listening TCP sockets (address, port) of process ``pid`` and of every process below
    it, by pid."""
    found: dict[int, set[tuple[str, int]]] = {}
    try:
        processes = [psutil.Process(pid), *descendants(pid)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        sockets = {
            (c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN
        }
        if sockets:
            found[process.pid] = sockets
    return found


@pytest.fixture
def survey(tmp_path) -> Path:
    """A one-lens survey on a local cluster of two workers; returns its config path."""
    return simulate_survey(tmp_path / "survey", 1, seed=5, shape_range=(40, 44), n_workers=2)


def _set_cluster(config: Path, **cluster) -> Path:
    data = yaml.safe_load(config.read_text())
    data["cluster"].update(cluster)
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.parametrize("security", ["none", "tls"])
def test_lenspipe_run_listens_on_loopback_only(survey, tmp_path, security):
    """Every listening socket of a real ``lenspipe run`` (the driver with its scheduler and
    nannies, and the worker processes below it), sampled every few milliseconds for the whole
    run, is on 127.0.0.1; the driver never listens on more than the scheduler's port and one
    port per nanny (no dashboard or HTTP server: ``dashboard`` is false by default)."""
    config = _set_cluster(survey, n_workers=N_WORKERS, security=security)
    seen: set[tuple[str, int]] = set()
    most_in_driver = 0
    most_processes = 0
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [LENSPIPE, "run", str(config), "--no-progress"], stdout=stdout, stderr=stderr
        )
    with owned(process):
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            sockets = listening(process.pid)
            for found in sockets.values():
                seen |= found
            most_in_driver = max(most_in_driver, len(sockets.get(process.pid, ())))
            most_processes = max(most_processes, len(sockets))
            time.sleep(0.01)
        assert process.wait(timeout=60) == 0, err.read_text()
    assert seen, "no listening socket was observed"
    assert {address for address, _ in seen} <= LOOPBACK, seen
    # the whole cluster was observed: the driver and each worker process listened
    assert most_processes == 1 + N_WORKERS
    assert most_in_driver == 1 + N_WORKERS  # scheduler + nannies, never an HTTP server
    assert "Dask dashboard" not in err.read_text()


def _new_sockets(before: dict[int, set], after: dict[int, set]) -> dict[int, set]:
    return {
        pid: sockets - before.get(pid, set())
        for pid, sockets in after.items()
        if sockets - before.get(pid, set())
    }


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_no_dashboard_means_no_http_port():
    """``dashboard: false`` (the default): the scheduler advertises no dashboard, and the only
    ports this process gained are the scheduler's and the nannies'."""
    before = listening(psutil.Process().pid)
    with cluster_client(LocalClusterConfig(n_workers=N_WORKERS)) as client:
        after = listening(psutil.Process().pid)
        info = client.scheduler_info(n_workers=-1)
        assert info["services"] == {}
        assert client.dashboard_link == ""
        assert client.submit(sum, [1, 2]).result() == 3
    mine = _new_sockets(before, after)
    driver = mine.pop(psutil.Process().pid)
    expected = {_port(info["address"])} | {_port(w["nanny"]) for w in info["workers"].values()}
    assert {port for _, port in driver} == expected
    assert len(expected) == 1 + N_WORKERS
    assert len(mine) == N_WORKERS  # the worker processes
    everything = driver.union(*mine.values())
    assert {address for address, _ in everything} <= LOOPBACK, everything


def test_dashboard_on_loopback_when_asked(capsys):
    before = listening(psutil.Process().pid)
    with cluster_client(LocalClusterConfig(n_workers=1, dashboard=True)) as client:
        after = listening(psutil.Process().pid)
        port = client.scheduler_info()["services"]["dashboard"]
        link = client.dashboard_link
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200 and answer.read() == b"ok"
    assert f"Dask dashboard: {link}" in capsys.readouterr().err
    assert link == f"http://127.0.0.1:{port}/status"
    driver = _new_sockets(before, after)[psutil.Process().pid]
    assert ("127.0.0.1", port) in driver
    assert {address for address, _ in driver} <= LOOPBACK, driver


def _refused(connect) -> str:
    try:
        connect()
    except Exception as err:  # noqa: BLE001 - any failure to connect is what we want
        return f"{type(err).__name__}: {err}"
    raise AssertionError("connected without the cluster's credentials")


def test_tls_scheduler_refuses_processes_without_its_credentials():
    """``security: tls``: the scheduler speaks tls:// on 127.0.0.1 and refuses a plain client,
    a client of another TLS cluster (a certificate it did not sign) and a TLS connection that
    shows no certificate; the run's own client (with the credentials) runs tasks."""
    from distributed import Client
    from distributed.security import Security

    with cluster_client(LocalClusterConfig(n_workers=1, security="tls")) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.submit(pow, 2, 10).result() == 1024
        workers = client.scheduler_info()["workers"]
        assert workers and all(w.startswith("tls://127.0.0.1:") for w in workers)

        # no credentials at all (the client refuses to talk TLS without them)
        _refused(lambda: Client(address, timeout=5))
        # plain TCP to the TLS port: the scheduler's handshake fails
        _refused(lambda: Client(address.replace("tls://", "tcp://"), timeout=5))
        # valid TLS, but credentials the cluster never issued: the scheduler refuses them
        other = Security.temporary()
        _refused(lambda: Client(address, timeout=5, security=other))

        # TLS with no client certificate: the server ends the connection instead of speaking
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            try:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(b"\x00" * 16)
                    received = tls.recv(1024)
            except (ssl.SSLError, ConnectionError):
                received = b""
        assert received == b""

        # the cluster still serves its own client
        assert client.submit(pow, 3, 3).result() == 27
        assert len(client.scheduler_info()["workers"]) == 1
