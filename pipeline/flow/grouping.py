"""How many datasets one prepare task takes (``run.datasets_per_task``).

Dask costs about 4 ms of CPU per task on a 2-core VM (driver, scheduler and worker together,
measured with empty tasks: ``benchmarks/pipeline.py``), and a small dataset's whole prepare
task (load, operator, write) takes 30-80 ms: one task per dataset spends 5-10% of the cores on
Dask itself. :class:`PrepareGrouping` gives the driver the size of the next prepare task:

* ``auto`` (the default): tasks of about :data:`TARGET_TASK_SECONDS`, from the wall seconds per
  dataset of the prepare tasks finished so far (the median of the last
  :data:`RECENT_RESULTS`), at most :data:`MOST_AUTO_DATASETS` datasets; one dataset per task
  until a first result is in;
* an integer ``n``: at most ``n`` datasets per task;
* either way, never so many that the datasets still queued would not keep every worker busy
  (:data:`TASKS_PER_WORKER` tasks each): the last tasks of a run are single datasets.

Pure bookkeeping: no Dask, no I/O. The driver splits a group whose task fails or times out
into one task per dataset, so a bad dataset still fails alone (:mod:`pipeline.flow.driver`).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Literal

__all__ = [
    "MOST_AUTO_DATASETS",
    "PrepareGrouping",
    "RECENT_RESULTS",
    "TARGET_TASK_SECONDS",
    "TASKS_PER_WORKER",
]

TARGET_TASK_SECONDS = 0.5
"""Wall seconds one prepare task aims at under ``auto``: Dask's ~4 ms per task is then < 1%."""

MOST_AUTO_DATASETS = 16
"""Most datasets per task under ``auto``."""

RECENT_RESULTS = 64
"""Prepare results whose seconds per dataset ``auto`` takes the median of."""

TASKS_PER_WORKER = 4
"""Tasks per worker that the datasets still queued must fill before any task takes two."""


class PrepareGrouping:
    """The size of the next prepare task.

    Parameters
    ----------
    setting
        ``"auto"`` or the most datasets per task (an integer >= 1).
    """

    def __init__(self, setting: int | Literal["auto"]) -> None:
        if setting != "auto" and (isinstance(setting, bool) or not isinstance(setting, int)):
            raise ValueError(f"datasets_per_task must be 'auto' or an integer, got {setting!r}")
        if isinstance(setting, int) and setting < 1:
            raise ValueError(f"datasets_per_task must be >= 1, got {setting}")
        self.setting = setting
        self.recent: deque[float] = deque(maxlen=RECENT_RESULTS)

    def observe(self, seconds: float) -> None:
        """Record the wall seconds one dataset's prepare took (its task's share)."""
        if math.isfinite(seconds) and seconds >= 0:
            self.recent.append(seconds)

    @property
    def measured(self) -> bool:
        """Whether ``auto`` has a time per dataset to go by (always True for an integer)."""
        return self.setting != "auto" or bool(self.recent)

    def wanted(self) -> int:
        """Datasets per task before the balance rule of :meth:`size`."""
        if self.setting != "auto":
            return int(self.setting)
        if not self.recent:
            return 1
        typical = statistics.median(self.recent)
        if typical <= 0:
            return MOST_AUTO_DATASETS
        return max(1, min(MOST_AUTO_DATASETS, int(TARGET_TASK_SECONDS / typical)))

    def size(self, queued: int, workers: int) -> int:
        """Datasets for the next task, with ``queued`` datasets waiting (this task's included)
        and ``workers`` able to run tasks: :meth:`wanted`, but no more than leaves
        :data:`TASKS_PER_WORKER` tasks per worker, and at least 1."""
        balance = queued // (TASKS_PER_WORKER * max(1, workers))
        return max(1, min(self.wanted(), balance, queued))
