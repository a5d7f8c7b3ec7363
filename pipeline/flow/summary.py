"""The record of a run.

:class:`RunSummary` counts datasets and operator batches and adds up the tasks' times; the driver
prints its :meth:`~RunSummary.table` and records :meth:`~RunSummary.to_dict` in the store (its
field names are part of the store: they never change). The progress display is
:mod:`pipeline.flow.progress`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.flow.tasks import BatchResult, PrepareResult

__all__ = ["RunSummary"]


@dataclass
class RunSummary:
    """Counts, failures and times of one run (stored as JSON in the store under ``runs/``).

    ``stopped``: why the run ended before its work was done (a signal, no worker alive, the lock
    lost), ``None`` for a run that finished; ``stop_code``: its exit status."""

    run_id: str
    store: str
    started: str
    datasets_total: int = 0
    complete: int = 0
    failed: int = 0
    skipped_complete: int = 0
    resumed: int = 0
    changed_inputs: int = 0
    rebuilt: int = 0
    # operator batches: computed, skipped (done before), found damaged; the names are those
    # of the run records already in stores
    shards_computed: int = 0
    shards_skipped: int = 0
    shards_damaged: int = 0
    tasks_timed_out: int = 0
    cpu_seconds: float = 0.0  # CPU time of all tasks
    prepare_seconds: float = 0.0  # wall seconds in tasks: FITS, checks, masks, over-sampling
    kernel_seconds: float = 0.0  # wall seconds in tasks: operator rows
    write_seconds: float = 0.0  # wall seconds in tasks: store writes (groups and batches)
    wall_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    # datasets prepared this run with pixels masked by mask.bad_pixels: mask, counts by kind
    bad_pixels: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    stop_code: int | None = None

    @property
    def exit_code(self) -> int:
        """0 if every dataset is complete, 3 if the run finished with failed datasets; for a run
        stopped early, 128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP) or 1."""
        if self.stop_code is not None:
            return self.stop_code
        return 0 if self.failed == 0 else 3

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if not self.bad_pixels:  # added later: absent, runs record exactly what they did before
            del record["bad_pixels"]
        return record

    def table(self) -> str:
        rows = [
            ("datasets", self.datasets_total),
            ("complete (this run)", self.complete),
            ("skipped (already complete)", self.skipped_complete),
            ("resumed (prepared before)", self.resumed),
            ("changed inputs (prepared again)", self.changed_inputs),
            ("damaged (prepared again)", self.rebuilt),
            ("failed", self.failed),
            ("operator batches computed", self.shards_computed),
            ("operator batches skipped (done before)", self.shards_skipped),
            ("operator batches found damaged (redone)", self.shards_damaged),
            ("tasks past run.task_timeout", self.tasks_timed_out),
            ("task CPU time [s]", f"{self.cpu_seconds:.1f}"),
            (
                "task wall time [s]",
                f"{self.prepare_seconds + self.kernel_seconds + self.write_seconds:.1f}",
            ),
            ("  loading and preparing [s]", f"{self.prepare_seconds:.1f}"),
            ("  operator kernels [s]", f"{self.kernel_seconds:.1f}"),
            ("  store writes [s]", f"{self.write_seconds:.1f}"),
            ("wall time [s]", f"{self.wall_seconds:.1f}"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"Run {self.run_id} -> {self.store}"]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        if self.bad_pixels:
            lines.append("Bad pixels masked (mask.bad_pixels: mask):")
            for entry in self.bad_pixels:
                counts = ", ".join(f"{k} {v}" for k, v in entry.items() if k != "name")
                lines.append(f"  {entry['name']}: {counts}")
        if self.failures:
            lines.append("Failures:")
            lines += [f"  {f['name']}: {f['message']}" for f in self.failures]
        if self.stopped:
            lines.append(f"Stopped early: {self.stopped}")
        return "\n".join(lines)

    def add_prepared(self, result: PrepareResult) -> None:
        """Count a prepare task's times: CPU, loading (not the group write, counted under store
        writes); its first operator batch, if any, is counted by :meth:`add_batch`."""
        self.cpu_seconds += result.cpu_seconds
        self.prepare_seconds += result.load_seconds
        counts = result.metadata.get("bad_pixels")
        if isinstance(counts, dict) and any(counts.values()):
            self.bad_pixels.append({"name": result.name, **counts})
        self.write_seconds += result.write_seconds
        if result.first_batch is not None:
            self.cpu_seconds -= result.first_batch.cpu_seconds  # counted once, as a batch

    def add_batch(self, result: BatchResult) -> None:
        """Count one operator batch computed and its times."""
        self.shards_computed += 1
        self.cpu_seconds += result.cpu_seconds
        self.kernel_seconds += result.kernel_seconds
        self.write_seconds += result.write_seconds
