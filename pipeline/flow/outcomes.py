"""What a run's tasks came to, recorded as they arrive: the run summary, the progress bars, and
the store's dataset statuses (failed, complete) and run record.

:class:`Outcomes` is the driver's ledger (:mod:`pipeline.flow.driver`): it knows which operator
batches each dataset still waits for and marks a dataset complete when the last one returns.
Isolation: a store error while recording one dataset's outcome fails that dataset only (a full
disk, a torn group), and a run record that cannot be written is reported, never fatal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pipeline.exc import StoreError
from pipeline.flow.progress import Progress
from pipeline.flow.summary import RunSummary
from pipeline.flow.tasks import BatchResult, PrepareResult
from pipeline.io.store import finalize_dataset, mark_failed, record_run_summary

__all__ = ["Outcomes"]

logger = logging.getLogger(__name__)


class Outcomes:
    """The outcomes of a run writing to the open store ``root``, counted in ``summary`` and
    shown by ``progress``."""

    def __init__(self, summary: RunSummary, progress: Progress, root: Any) -> None:
        self.summary, self.progress, self.root = summary, progress, root
        self.remaining: dict[str, set[int]] = {}  # operator batches each dataset waits for
        self.timings: dict[str, dict[str, float]] = {}
        self.failed: set[str] = set()

    def fail(self, name: str, message: str, error_type: str | None = None) -> None:
        """Mark dataset ``name`` failed (once) with ``message``."""
        if name in self.failed:
            return
        self.failed.add(name)
        self.remaining.pop(name, None)
        self.summary.failed += 1
        try:
            mark_failed(self.root, name, message, error_type=error_type)
        except (OSError, StoreError) as err:  # a full disk, a torn group: this dataset only
            message += f" [not recorded in the store: {type(err).__name__}: {err}]"
        self.summary.failures.append({"name": name, "message": message})
        self.progress.dataset_done(failed=True)

    def complete(self, name: str, *, verify_markers: bool = False) -> None:
        """Record dataset ``name`` complete (its failure if that cannot be written)."""
        try:
            finalize_dataset(
                self.root, name, timings=self.timings.get(name), verify_markers=verify_markers
            )
        except (OSError, StoreError) as err:  # StoreError is an OSError; ENOSPC too
            self.fail(name, f"dataset {name!r}: could not be recorded complete: {err}")
            return
        self.summary.complete += 1
        self.progress.dataset_done()

    def expect_batches(self, name: str, indexes: list[int]) -> None:
        """Dataset ``name`` is complete once operator batches ``indexes`` have returned."""
        self.remaining[name] = set(indexes)

    def prepared(self, result: PrepareResult) -> list[int] | None:
        """Record a prepare task's result: the operator batches its dataset still needs, or
        ``None`` if the task recorded it complete."""
        name, first = result.name, result.first_batch
        self.summary.add_prepared(result)
        # the same meaning as the task's own record: loading and preparing (not the group write,
        # which the summary counts under store writes); finalize writes this over it
        self.timings[name] = {"prepare_seconds": result.load_seconds}
        if first is not None:
            self._account_batch(first)
        if result.complete:
            # nothing was left to compute (no operator, or its only batch came with the prepare
            # task): the task recorded the dataset complete
            self.summary.complete += 1
            self.progress.dataset_done()
            return None
        indexes = list(range(0 if first is None else 1, result.n_batches))
        self.expect_batches(name, indexes)
        return indexes

    def batch_done(self, result: BatchResult) -> None:
        """Record an operator batch; its dataset is complete with its last batch."""
        self._account_batch(result)
        left = self.remaining.get(result.name)
        if left is None:
            return
        left.discard(result.batch_index)
        if not left:
            del self.remaining[result.name]
            self.complete(result.name)

    def _account_batch(self, result: BatchResult) -> None:
        self.summary.add_batch(result)
        timing = self.timings.setdefault(result.name, {})
        timing["operator_seconds"] = timing.get("operator_seconds", 0.0) + result.wall_seconds
        self.progress.batch_done()

    def record(self) -> None:
        """Write the run summary to the store's run records."""
        try:
            record_run_summary(self.root, self.summary.run_id, self.summary.to_dict())
        except (OSError, StoreError) as err:  # a full disk must not hide the summary
            logger.error("could not record run %s in the store: %s", self.summary.run_id, err)
            print(
                f"warning: the run record could not be written to the store ({err})",
                file=sys.stderr,
            )
