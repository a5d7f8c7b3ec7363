"""A survey run from start to end: :func:`run_survey`.

It discovers the datasets, checks the store's location, derives the run's settings once
(:class:`~pipeline.flow.plan.RunSettings`), creates or opens the store and takes its run lock,
plans what is left to do (:func:`~pipeline.flow.plan.plan_run`: complete datasets skipped,
prepared ones resumed at their unfinished operator batches, changed or damaged ones prepared
again), starts the cluster only if there is work, and hands over to the driver loop
(:class:`~pipeline.flow.driver.Driver`). SIGINT, SIGTERM and SIGHUP are caught for the whole run
(:mod:`pipeline.flow.signals`): before any task exists one ends the run at once
(:class:`~pipeline.exc.RunInterrupted`); later, the driver stops cleanly with exit 128 + its
number. The lock is always released.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import uuid
from collections.abc import Collection
from typing import Any

from pipeline.exc import ConfigError
from pipeline.flow.config import Config
from pipeline.flow.discover import discover
from pipeline.flow.driver import Driver
from pipeline.flow.plan import RunSettings, check_store_location, plan_run
from pipeline.flow.signals import StopSignals
from pipeline.flow.summary import RunSummary
from pipeline.io.store import acquire_run_lock, create_store

__all__ = ["run_survey"]


def run_survey(
    config: Config,
    *,
    client: Any = None,
    overwrite: bool | Collection[str] = False,
    progress: bool | None = None,
    verify: bool | None = None,
) -> RunSummary:
    """Run (or resume) the survey described by ``config``; returns the summary.

    ``overwrite``: True to prepare every dataset again, or the names of datasets to prepare
    again. ``verify`` (default ``config.run.verify``): also check every node and chunk of
    complete datasets and repair what is damaged. Raises :class:`ConfigError` before submitting
    anything if datasets in the store were made with different settings (unless ``overwrite``)
    or the store overlaps the inputs, :class:`StoreError` if another run holds the store's lock,
    and :class:`RunInterrupted` for a stop signal received before any task was submitted. A
    signal received later, or no worker alive for ``cluster.start_timeout``, ends the run early:
    the summary says why (``stopped``) and carries the exit code.
    """
    with StopSignals() as signals:
        found = discover(config)
        check_store_location(config, found)
        settings = RunSettings.from_config(config, verify=verify, progress=progress)
        store = settings.store
        root = create_store(store.location, storage_options=store.storage_options or None)
        run_id = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        lock = acquire_run_lock(root, run_id).start_heartbeat()
        try:
            plan = plan_run(
                config,
                root,
                overwrite=overwrite,
                verify=settings.verify,
                found=found,
                settings=settings,
            )
            if plan.conflicts:
                raise ConfigError(
                    f"{len(plan.conflicts)} dataset(s) in {store.location} were prepared with "
                    f"different settings (first: {plan.conflicts[:5]}); rerun with --overwrite "
                    "to replace them, or choose another output.store"
                )
            with contextlib.ExitStack() as stack:
                with signals.deferred():
                    if client is None and (plan.to_prepare or plan.to_resume):
                        from pipeline.flow.cluster import cluster_client

                        client = stack.enter_context(cluster_client(config.cluster))
                    if config.run.performance_report and client is not None:
                        from distributed import performance_report

                        path = str(config.path(config.run.performance_report))
                        stack.enter_context(performance_report(filename=path))
                    driver = Driver(settings, client, root, plan, run_id, lock)
                    return driver.run(signals)
        finally:
            signals.raising = False  # the lock is always released
            lock.release()
