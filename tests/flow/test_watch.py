"""The watchdog's decisions on their own (no cluster): no worker for too long, and tasks held past
their deadline, each once per worker, giving up after ``retries``."""

from __future__ import annotations

from pipeline.flow.watch import Watchdog


def test_checks_at_most_every_period():
    dog = Watchdog(task_timeout=5.0, start_timeout=10.0, retries=1)
    assert dog.every == 1.0  # a fifth of the task timeout, within [0.2, 2] s
    assert dog.due(100.0) and not dog.due(100.5) and dog.due(101.0)


def test_no_worker_for_longer_than_the_start_timeout():
    dog = Watchdog(task_timeout=60.0, start_timeout=10.0, retries=1)
    assert not dog.no_worker_for_too_long(0, now=0.0)
    assert not dog.no_worker_for_too_long(0, now=10.0)
    assert not dog.no_worker_for_too_long(2, now=15.0)  # a worker came back: the clock restarts
    assert not dog.no_worker_for_too_long(0, now=16.0)
    assert dog.no_worker_for_too_long(0, now=26.5)


def test_overdue_tasks_once_per_worker_then_give_up():
    dog = Watchdog(task_timeout=30.0, start_timeout=10.0, retries=1)
    ours = {"op-a-0", "op-a-1"}
    held = {"op-a-0": ("w1", 31.0), "op-a-1": ("w1", 29.0), "other": ("w1", 99.0)}
    (first,) = dog.overdue(held, ours)
    assert (first.key, first.address, first.count, first.give_up) == ("op-a-0", "w1", 1, False)
    assert list(dog.overdue(held, ours)) == []  # already taken from w1
    (second,) = dog.overdue({"op-a-0": ("w2", 40.0)}, ours)
    assert (second.count, second.give_up) == (2, True)  # more than retries=1
