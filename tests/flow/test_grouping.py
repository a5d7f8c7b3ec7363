"""How many datasets a prepare task takes (``run.datasets_per_task``), and the order and keys
of the driver's tasks (:class:`~pipeline.flow.queue.TaskQueue`)."""

from __future__ import annotations

import pytest

from pipeline.flow.discover import DatasetSpec, FileRef
from pipeline.flow.grouping import (
    MOST_AUTO_DATASETS,
    RECENT_RESULTS,
    TARGET_TASK_SECONDS,
    TASKS_PER_WORKER,
    PrepareGrouping,
)
from pipeline.flow.queue import TaskQueue


def _spec(name: str) -> DatasetSpec:
    ref = FileRef(f"/data/{name}.fits", 0)
    return DatasetSpec(name=name, data=ref, noise_map=ref, psf=ref)


def _specs(n: int) -> list[DatasetSpec]:
    return [_spec(f"lens_{i:03d}") for i in range(n)]


# ------------------------------------------------------------------------------------ grouping
def test_auto_takes_one_dataset_per_task_until_a_time_is_measured():
    grouping = PrepareGrouping("auto")
    assert not grouping.measured
    assert grouping.wanted() == 1
    assert grouping.size(queued=10_000, workers=2) == 1


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.05, 10),  # 0.5 s / 0.05 s
        (0.06, 8),  # int(8.33)
        (0.2, 2),
        (0.3, 1),
        (5.0, 1),  # slow datasets: one per task
        (0.001, MOST_AUTO_DATASETS),  # capped
        (0.0, MOST_AUTO_DATASETS),
    ],
)
def test_auto_aims_at_half_a_second_per_task(seconds, expected):
    grouping = PrepareGrouping("auto")
    grouping.observe(seconds)
    assert grouping.measured
    assert grouping.wanted() == expected
    assert TARGET_TASK_SECONDS == 0.5  # the expectations above are for half a second


def test_auto_goes_by_the_median_of_recent_results():
    grouping = PrepareGrouping("auto")
    for seconds in [10.0] * 3 + [0.1] * 4:  # one slow outlier group does not decide
        grouping.observe(seconds)
    assert grouping.wanted() == 5
    for _ in range(RECENT_RESULTS):  # the old ones age out
        grouping.observe(0.25)
    assert list(grouping.recent) == [0.25] * RECENT_RESULTS
    assert grouping.wanted() == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_times_that_are_not_times_are_ignored(bad):
    grouping = PrepareGrouping("auto")
    grouping.observe(bad)
    assert not grouping.measured


def test_a_fixed_size_is_the_most_per_task_and_needs_no_measurement():
    grouping = PrepareGrouping(5)
    assert grouping.measured and grouping.wanted() == 5
    assert grouping.size(queued=1000, workers=2) == 5


@pytest.mark.parametrize(
    ("queued", "workers", "expected"),
    [
        (1000, 2, 8),
        (64, 2, 8),  # 64 // (4 * 2) = 8: every worker still gets 4 tasks
        (40, 2, 5),
        (15, 2, 1),
        (7, 2, 1),
        (1, 2, 1),
        (1000, 100, 2),
        (1000, 0, 8),  # no worker seen yet counts as one
    ],
)
def test_groups_shrink_so_that_the_queue_keeps_every_worker_busy(queued, workers, expected):
    grouping = PrepareGrouping(8)
    assert grouping.size(queued, workers) == expected
    assert expected == max(1, min(8, queued // (TASKS_PER_WORKER * max(1, workers))))


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "many", None])
def test_a_bad_setting_is_refused(bad):
    with pytest.raises(ValueError, match="datasets_per_task"):
        PrepareGrouping(bad)


# ------------------------------------------------------------------------------------ queue
def test_batches_go_first_then_split_datasets_then_new_groups():
    queue = TaskQueue(_specs(40), 4, "h")
    queue.add_batches("old", [1, 2])
    queue.add_batches("older", [3])  # queued later, taken first: depth first
    batches, prepares = queue.take(5, in_flight=0, workers=2, failed=set())
    assert [(t.name, t.index, t.key) for t in batches] == [
        ("older", 3, "op-older-h-3"),
        ("old", 1, "op-old-h-1"),
        ("old", 2, "op-old-h-2"),
    ]
    assert [[s.name for s in t.specs] for t in prepares] == [
        [f"lens_{i:03d}" for i in range(0, 4)],
        [f"lens_{i:03d}" for i in range(4, 8)],
    ]
    assert [t.key for t in prepares] == ["prepare-lens_000:4-h", "prepare-lens_004:4-h"]
    assert queue.group_sizes() == {"prepare-lens_000:4-h": 4, "prepare-lens_004:4-h": 4}

    split = queue.split("prepare-lens_004:4-h", failed={"lens_006"})
    assert [s.name for s in split] == ["lens_004", "lens_005", "lens_007"]
    assert "prepare-lens_004:4-h" not in queue.names
    _, prepares = queue.take(4, in_flight=0, workers=2, failed=set())
    assert [t.key for t in prepares] == [
        "prepare-lens_004-h",
        "prepare-lens_005-h",
        "prepare-lens_007-h",
        "prepare-lens_008:4-h",
    ]
    assert [t.is_group for t in prepares] == [False, False, False, True]
    assert queue.name_of("prepare-lens_008:4-h") == "lens_008"
    queue.done("prepare-lens_008:4-h")
    assert "prepare-lens_008:4-h" not in queue.names
    assert "prepare-lens_008:4-h" not in queue.group_sizes()


def test_batches_of_failed_datasets_are_dropped():
    queue = TaskQueue([], 1, "h")
    queue.add_batches("bad", [1, 2])
    queue.add_batches("good", [1])
    batches, prepares = queue.take(10, in_flight=0, workers=1, failed={"bad"})
    assert [t.key for t in batches] == ["op-good-h-1"] and prepares == []
    assert not queue


def test_every_dataset_is_handed_out_once_and_keys_are_unique():
    queue = TaskQueue(_specs(203), "auto", "h")
    queue.grouping.observe(0.05)
    seen: list[str] = []
    keys: list[str] = []
    while queue:
        _, prepares = queue.take(7, in_flight=0, workers=3, failed=set())
        for task in prepares:
            seen += [s.name for s in task.specs]
            keys.append(task.key)
    assert seen == [s.name for s in _specs(203)]
    assert len(set(keys)) == len(keys)
    sizes = [int(k.split(":")[1].split("-")[0]) if ":" in k else 1 for k in keys]
    assert max(sizes) == 10 and sizes[-1] == 1  # groups shrink towards the end


def test_auto_submits_two_tasks_per_worker_until_a_time_is_measured():
    queue = TaskQueue(_specs(100), "auto", "h")
    _, prepares = queue.take(64, in_flight=0, workers=3, failed=set())
    assert [len(t.specs) for t in prepares] == [1] * 6
    _, prepares = queue.take(64, in_flight=6, workers=3, failed=set())
    assert prepares == []
    queue.grouping.observe(0.1)
    _, prepares = queue.take(3, in_flight=6, workers=3, failed=set())
    assert [len(t.specs) for t in prepares] == [5, 5, 5]
