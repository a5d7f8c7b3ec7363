"""A run lock inside the store: one writer (driver) per store at a time.

The lock is a small JSON object ``lenspipe.lock`` at the store root (beside ``zarr.json``, not a
Zarr node) holding the owner's run id, host, pid and a heartbeat time. Acquiring writes it only if
absent (an exclusive create on local disks) and then reads it back: on object stores, where a
create-if-absent is not atomic, two drivers racing for the lock both write, and only the one whose
token survives the read-back after a short settle time holds it. Local and in-memory stores
create atomically, so their read-back needs no settle time, except after taking over a stale
lock (a plain overwrite, which two drivers may race).

Stale-lock rule: a lock whose heartbeat is older than ``stale_after`` seconds, or whose owner is a
dead process on this host, or that is not valid JSON, may be taken over (the new owner logs it).
A thread of the driver refreshes the heartbeat every ``interval`` seconds for as long as the driver
process lives (also while it waits hours for batch jobs to start or for one long task), and the
driver removes the lock when it ends. A holder whose lock was taken over (it stalled for longer
than ``stale_after``) notices at its next heartbeat, never overwrites the new owner's lock, and
reports ``lost``: the driver then stops with an error rather than write beside another run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import zarr

from pipeline.exc import StoreLockedError
from pipeline.io.store._zarr import as_buffer, get_bytes, sync
from pipeline.io.store.schema import LOCK_NAME

__all__ = ["LOCK_NAME", "SETTLE_SECONDS", "RunLock", "acquire_run_lock", "settle_seconds"]

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 0.2


def settle_seconds(store: object, *, took_over: bool) -> float:
    """Seconds to wait before reading a just-written lock back: none where the write was an atomic
    create-if-absent (local directory, memory), :data:`SETTLE_SECONDS` otherwise (object stores,
    and any takeover of a stale lock, which overwrites)."""
    from zarr.storage import LocalStore, MemoryStore

    if not took_over and isinstance(store, LocalStore | MemoryStore):
        return 0.0
    return SETTLE_SECONDS


def _key(root: zarr.Group) -> str:
    return f"{root.path}/{LOCK_NAME}" if root.path else LOCK_NAME


def _read(root: zarr.Group) -> dict | None:
    raw = sync(get_bytes(root.store, _key(root)))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"corrupt": True}


def _write(root: zarr.Group, content: dict, *, exclusive: bool) -> bool:
    buffer = as_buffer(json.dumps(content).encode())
    if exclusive:
        before = sync(root.store.exists(_key(root)))
        sync(root.store.set_if_not_exists(_key(root), buffer))
        return not before
    sync(root.store.set(_key(root), buffer))
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(content: dict, stale_after: float) -> bool:
    if not isinstance(content, dict) or content.get("corrupt"):
        return True
    try:
        pid, heartbeat = int(content.get("pid", 0)), float(content.get("heartbeat", 0.0))
    except (TypeError, ValueError):
        return True  # not a lock this code wrote: treat as corrupt
    if content.get("host") == socket.gethostname() and pid > 0 and not _process_alive(pid):
        return True
    return time.time() - heartbeat > stale_after


@dataclass
class RunLock:
    """A held lock; refresh with :meth:`heartbeat` (or :meth:`start_heartbeat` for a background
    thread), drop with :meth:`release`. ``lost`` turns true if another run took the lock over."""

    root: zarr.Group
    content: dict
    interval: float = 10.0
    _last: float = 0.0
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    def heartbeat(self, force: bool = False) -> None:
        with self._mutex:
            now = time.time()
            if self.lost or not (force or now - self._last >= self.interval):
                return
            current = _read(self.root)
            if current is not None and current.get("token") != self.content["token"]:
                self.lost = True
                logger.error(
                    "the run lock of run %s was taken over by run %s (host %s, pid %s)",
                    self.content["run_id"],
                    current.get("run_id"),
                    current.get("host"),
                    current.get("pid"),
                )
                return
            self.content["heartbeat"] = now
            _write(self.root, self.content, exclusive=False)
            self._last = now

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.heartbeat(force=True)
            except Exception:  # noqa: BLE001 - a failed refresh is retried at the next interval
                logger.warning("could not refresh the run lock's heartbeat", exc_info=True)
            if self.lost:
                return

    def start_heartbeat(self) -> RunLock:
        """Refresh the heartbeat every ``interval`` seconds from a daemon thread until
        :meth:`release`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name="lenspipe-run-lock-heartbeat", daemon=True
            )
            self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 60.0)
        with self._mutex:
            current = _read(self.root)
            if current is not None and current.get("token") == self.content["token"]:
                sync(self.root.store.delete(_key(self.root)))


def acquire_run_lock(
    root: zarr.Group,
    run_id: str,
    *,
    stale_after: float = 120.0,
    settle: float | None = None,
    interval: float = 10.0,
) -> RunLock:
    """Take the store's run lock or raise :class:`StoreLockedError` naming its holder. ``interval``:
    seconds between heartbeats (keep it well below ``stale_after``); ``settle``: seconds before
    the read-back (default :func:`settle_seconds`)."""
    content = {
        "run_id": run_id,
        "token": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "acquired": time.time(),
        "heartbeat": time.time(),
    }
    current = _read(root)
    took_over = current is not None
    if current is not None:
        if not _stale(current, stale_after):
            age = time.time() - float(current.get("heartbeat", 0.0))
            raise StoreLockedError(
                f"the store is in use by run {current.get('run_id')} (host {current.get('host')}, "
                f"pid {current.get('pid')}, last heartbeat {age:.0f} s ago); wait for it to "
                f"finish. A lock without heartbeat for {stale_after:.0f} s is treated as stale"
            )
        logger.warning("taking over the stale run lock of run %s", current.get("run_id"))
        _write(root, content, exclusive=False)
    elif not _write(root, content, exclusive=True):
        return acquire_run_lock(
            root, run_id, stale_after=stale_after, settle=settle, interval=interval
        )
    if settle is None:
        settle = settle_seconds(root.store, took_over=took_over)
    time.sleep(settle)  # object stores: let a racing writer's lock land before the read-back
    held = _read(root)
    if held is None or held.get("token") != content["token"]:
        raise StoreLockedError(
            f"the store's run lock was taken by run {held and held.get('run_id')} at the same time; "
            "try again once it has finished"
        )
    lock = RunLock(root, content, interval=interval)
    lock.heartbeat(force=True)
    return lock
