"""What the driver submits next, and what each submitted task's key stands for.

:class:`TaskQueue` holds a run's work not yet submitted, in the order the driver takes it:

1. operator batches of prepared datasets (depth first: few datasets are half-done at any time);
2. datasets of a split group, one per task (:meth:`TaskQueue.split`);
3. new datasets, several to a task (:class:`~pipeline.flow.grouping.PrepareGrouping`).

Keys are deterministic: ``op-NAME-HASH-INDEX`` for an operator batch, ``prepare-NAME-HASH`` for
one dataset, ``prepare-FIRST:COUNT-HASH`` for a group (``:`` is in no dataset name, so a
group's key is never a single dataset's). Pure bookkeeping: no Dask, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pipeline.flow.discover import DatasetSpec
from pipeline.flow.grouping import PrepareGrouping

__all__ = ["BatchTask", "PrepareTask", "TaskQueue"]


@dataclass(frozen=True)
class BatchTask:
    """Operator batch ``index`` of dataset ``name``, submitted under ``key``."""

    key: str
    name: str
    index: int


@dataclass(frozen=True)
class PrepareTask:
    """The datasets one prepare task takes (one, or a group), submitted under ``key``."""

    key: str
    specs: list[DatasetSpec]

    @property
    def is_group(self) -> bool:
        return len(self.specs) > 1


class TaskQueue:
    """A run's tasks not yet submitted (``to_prepare``: the datasets to prepare, in order;
    ``datasets_per_task``: ``run.datasets_per_task``; ``settings_hash``: part of every key).

    :meth:`take` hands out the next tasks and remembers which dataset each key stands for
    (:meth:`name_of`), and which datasets each group holds, until :meth:`done`."""

    def __init__(
        self,
        to_prepare: Iterable[DatasetSpec],
        datasets_per_task: int | Literal["auto"],
        settings_hash: str,
    ) -> None:
        self.hash = settings_hash
        self.grouping = PrepareGrouping(datasets_per_task)
        self.batches: deque[tuple[str, int]] = deque()
        self.singles: deque[DatasetSpec] = deque()  # of split groups: one per task
        self.prepares: deque[DatasetSpec] = deque(to_prepare)
        self.names: dict[str, str] = {}  # submitted key -> its dataset (a group's first)
        self.groups: dict[str, list[DatasetSpec]] = {}  # submitted group key -> its datasets

    def __bool__(self) -> bool:
        return bool(self.batches or self.singles or self.prepares)

    def add_batches(self, name: str, indexes: list[int]) -> None:
        """Queue operator batches of a prepared dataset, ahead of everything queued."""
        self.batches.extendleft((name, i) for i in reversed(indexes))

    def take(
        self, n: int, *, in_flight: int, workers: int, failed: set[str]
    ) -> tuple[list[BatchTask], list[PrepareTask]]:
        """Up to ``n`` tasks, in the queue's order, skipping batches of ``failed`` datasets.

        Prepares are grouped by :meth:`PrepareGrouping.size` for ``workers`` able to run tasks.
        Until a first prepare has finished, ``auto`` has no time per dataset to go by: it hands
        out single datasets, and no more than keeps two tasks (``in_flight`` included) per
        worker."""
        if not self.grouping.measured:
            n = min(n, max(0, 2 * workers - in_flight))
        batches: list[BatchTask] = []
        prepares: list[PrepareTask] = []
        while len(batches) + len(prepares) < n and self:
            if self.batches:
                name, index = self.batches.popleft()
                if name not in failed:
                    batches.append(BatchTask(f"op-{name}-{self.hash}-{index}", name, index))
                continue
            if self.singles:
                specs = [self.singles.popleft()]
            else:
                size = self.grouping.size(len(self.prepares), workers)
                specs = [self.prepares.popleft() for _ in range(size)]
            prepares.append(self._prepare_task(specs))
        for task in batches:
            self.names[task.key] = task.name
        return batches, prepares

    def _prepare_task(self, specs: list[DatasetSpec]) -> PrepareTask:
        first = specs[0].name
        if len(specs) == 1:
            key = f"prepare-{first}-{self.hash}"
        else:
            key = f"prepare-{first}:{len(specs)}-{self.hash}"
            self.groups[key] = specs
        self.names[key] = first
        return PrepareTask(key, specs)

    def name_of(self, key: str) -> str:
        """The dataset of a submitted task (a group's first dataset)."""
        return self.names[key]

    def group_sizes(self) -> dict[str, int]:
        """Datasets per submitted group task, by key."""
        return {key: len(specs) for key, specs in self.groups.items()}

    def done(self, key: str) -> None:
        """Forget a task whose outcome was handled."""
        self.names.pop(key, None)
        self.groups.pop(key, None)

    def split(self, key: str, failed: set[str]) -> list[DatasetSpec]:
        """Queue the datasets of group ``key`` one per task, ahead of new datasets (all but
        ``failed`` ones); returns them. The group's key is forgotten."""
        specs = [spec for spec in self.groups.pop(key) if spec.name not in failed]
        self.names.pop(key, None)
        self.singles.extend(specs)
        return specs
