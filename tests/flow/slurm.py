"""A real one-node SLURM for the tests: Debian's ``slurm-wlm`` and ``munge`` packages
(``apt-get install -y slurm-wlm munge``; CI installs them in ``.ci/run``).

:func:`one_node_slurm` starts, in a temporary folder of its own:

* ``munged`` as the ``munge`` user, with a key made by ``mungekey -c`` and its own socket (the
  machine's munge, if any, is not used or touched);
* ``slurmctld`` and ``slurmd`` as root, in the foreground (``-D``), from a ``slurm.conf`` written
  there: ``SlurmUser=root``, free ports, ``ProctrackType=proctrack/linuxproc``,
  ``TaskPlugin=task/none``, ``SelectType=select/cons_tres``, one node (this host, with the cores
  and memory ``slurmd -C`` finds) in one partition, :data:`PARTITION`;

waits until ``sinfo`` shows the node idle, and at the end cancels every job left, waits until
``squeue`` is empty, and stops every daemon it started, by pid (SIGTERM, then SIGKILL). Client
commands reach this cluster through ``SLURM_CONF`` (:attr:`Slurm.env`).

Where the packages are missing the tests that need them are skipped, with the command that
installs them; in CI (``CI`` set, as ``.ci/run`` does) they fail instead: never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL = "apt-get install -y slurm-wlm munge"
COMMANDS = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scancel",
    "scontrol",
)
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PARTITION = "lenspipe"
MUNGE_USER = "munge"
START_TIMEOUT = 60.0  # seconds for munged's socket, then for the node to be idle
STOP_TIMEOUT = 30.0  # seconds for the jobs to leave squeue, then for each daemon to exit
COMMAND_TIMEOUT = 30.0  # seconds for one client command (sinfo, squeue, scancel, sbatch)


def _not_run(message: str) -> None:
    """Skip the test, loudly; fail it where ``CI`` is set: CI must run the SLURM tests."""
    message = f"NOT RUN: the SLURM tests need {message}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so this fails instead of skipping")
    pytest.skip(message)


def slurm_commands() -> dict[str, str]:
    """The path of each command the cluster needs (missing ones: :func:`_not_run`, with the
    command that installs them)."""
    found = {name: shutil.which(name, path=SEARCH_PATH) for name in COMMANDS}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        _not_run(
            f"a real SLURM and munge ({', '.join(missing)} not found): {INSTALL} (as root, as "
            ".ci/run does)"
        )
    return {name: path for name, path in found.items() if path is not None}


@dataclass
class Slurm:
    """A running one-node SLURM: its folder, config and client environment."""

    folder: Path
    config: Path
    node: str
    commands: dict[str, str]
    partition: str = PARTITION
    env: dict[str, str] = field(default_factory=dict)

    def command(self, name: str, *args: str, check: bool = True) -> str:
        """Run a client command (``squeue``, ``sinfo``, ...) against this cluster; its stdout."""
        done = subprocess.run(
            [self.commands[name], *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def jobs(self) -> dict[str, str]:
        """Every job in ``squeue``: {job id: state} (PENDING, RUNNING, COMPLETING, ...)."""
        lines = self.command("squeue", "--noheader", "--format=%i %T").split("\n")
        return dict(line.split() for line in lines if line.strip())

    def wait_for_no_jobs(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait until ``squeue`` lists no job; fails after ``timeout`` seconds naming them."""
        deadline = time.monotonic() + timeout
        while (left := self.jobs()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"jobs still in squeue after {timeout:g} s: {left}"

    def node_state(self) -> str:
        return self.command("sinfo", "--noheader", "--Node", "--format=%T", check=False).strip()

    def log(self, name: str, lines: int = 30) -> str:
        """The last ``lines`` of a daemon's log (slurmctld, slurmd, munged)."""
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return f"--- {path}:\n" + "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _node_line(slurmd: str) -> tuple[str, str]:
    """This host as ``slurmd -C`` describes it: (node name, its NodeName=... line)."""
    done = subprocess.run(
        [slurmd, "-C"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True
    )
    line = done.stdout.splitlines()[0].strip()
    assert line.startswith("NodeName="), done.stdout
    return line.split()[0].removeprefix("NodeName="), line


def write_config(folder: Path, munge_socket: Path, node_line: str, node: str) -> Path:
    """``folder/slurm.conf``: root daemons on free ports, no cgroups, one node, one partition,
    state and spool under ``folder``."""
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    lines = [
        "ClusterName=lenspipe-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        # schedule a batch job when it is submitted: by default SLURM may delay that by up to
        # 3 s (batch_sched_delay), and a job submitted just after another started then waited
        # in PENDING while the adaptive test's short burst of tasks came and went
        "SchedulerParameters=batch_sched_delay=0",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=30 State=UP",
    ]
    config = folder / "slurm.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


def _start(command: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """A daemon in the foreground, in a session of its own (a Ctrl-C of pytest does not reach
    it before the fixture stops it), output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )


def _wait_until(ready, what: str, processes: list[subprocess.Popen], diagnose) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        dead = [p.args[0] for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"not within {START_TIMEOUT:g} s"
            raise AssertionError(f"SLURM test cluster: {what}: {reason}\n{diagnose()}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the daemon (by pid), SIGKILL it after ``STOP_TIMEOUT`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def one_node_slurm(folder: Path) -> Iterator[Slurm]:
    """Start munged, slurmctld and slurmd (config, state and logs in ``folder``; munge's key and
    socket in a folder of the ``munge`` user), yield the cluster once its node is idle, then
    cancel every job, wait until ``squeue`` is empty and stop the daemons, by pid."""
    commands = slurm_commands()
    if os.geteuid() != 0:
        _not_run("root: its daemons run as root, munged as the munge user")
    started: list[subprocess.Popen] = []
    # munged checks that its folder belongs to its user and that all may enter it (the socket);
    # pytest's own temporary folders are root's, mode 0700
    munge = Path(tempfile.mkdtemp(prefix="lenspipe-munge-"))
    slurm: Slurm | None = None
    try:
        shutil.chown(munge, MUNGE_USER, MUNGE_USER)
        munge.chmod(0o755)
        as_munge = {"user": MUNGE_USER, "group": MUNGE_USER, "extra_groups": []}
        subprocess.run(
            [commands["mungekey"], "-c", "-k", str(munge / "munge.key")],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            **as_munge,
        )
        munge_socket = munge / "munge.socket"
        munged = [commands["munged"], "--foreground", f"--key-file={munge / 'munge.key'}"]
        munged += [f"--socket={munge_socket}", f"--pid-file={munge / 'munged.pid'}"]
        munged += [f"--seed-file={munge / 'munged.seed'}"]
        started.append(_start(munged, folder / "munged.log", **as_munge))
        _wait_until(
            munge_socket.exists,
            "munged's socket",
            started,
            lambda: (folder / "munged.log").read_text(errors="replace"),
        )

        node, node_line = _node_line(commands["slurmd"])
        config = write_config(folder, munge_socket, node_line, node)
        env = {**os.environ, "SLURM_CONF": str(config)}
        slurm = Slurm(folder=folder, config=config, node=node, commands=commands, env=env)
        daemons = [
            [commands["slurmctld"], "-D", "-i", "-f", str(config)],
            [commands["slurmd"], "-D", "-f", str(config), "-N", node],
        ]
        for daemon in daemons:
            name = Path(daemon[0]).name
            started.append(_start(daemon, folder / f"{name}.out", env=env, cwd=folder))
        cluster = slurm
        _wait_until(
            lambda: cluster.node_state() == "idle",
            f"node {node} idle in sinfo",
            started,
            lambda: (
                f"sinfo: {cluster.node_state()!r}\n"
                + "\n".join(cluster.log(n) for n in ("slurmctld", "slurmd"))
            ),
        )
        yield slurm
    finally:
        try:
            if slurm is not None and all(p.poll() is None for p in started):
                left = slurm.jobs()
                if left:
                    slurm.command("scancel", *left, check=False)
                slurm.wait_for_no_jobs()
        finally:
            for process in reversed(started):  # slurmd, slurmctld, munged
                _stop(process)
            shutil.rmtree(munge, ignore_errors=True)
