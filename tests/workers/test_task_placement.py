"""One task partition per queue per transaction, a different one each transaction."""

from __future__ import annotations

import pytest

from workers.partition import Outbound
from workers.task_placement import TaskPlacement

TASKS, OTHER = "ns.tasks.q", "ns.history"


def _task(key: bytes) -> Outbound:
    return Outbound(TASKS, key, b"task")


def test_tasks_of_one_transaction_share_a_partition_and_the_next_takes_the_next() -> None:
    placement = TaskPlacement()
    placement.learn(TASKS, 3)
    turns = [
        {r.partition for r in placement.place([_task(b"a/1"), _task(b"b/1"), _task(b"c/2")])}
        for _ in range(4)
    ]
    assert turns == [{0}, {1}, {2}, {0}]


def test_records_of_other_topics_and_placed_ones_are_left_as_they_are() -> None:
    placement = TaskPlacement()
    placement.learn(TASKS, 4)
    history = Outbound(OTHER, b"k", b"v", partition=7)
    unknown = Outbound("ns.tasks.unknown", b"k", b"v")
    pinned = Outbound(TASKS, b"k", b"v", partition=3)
    placed = placement.place([history, unknown, pinned, _task(b"x/1")])
    assert placed[:3] == [history, unknown, pinned]
    assert placed[3].partition == 0 and placed[3].key == b"x/1"


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="no partitions"):
        TaskPlacement().learn(TASKS, 0)


def test_a_cancellation_goes_to_every_partition_of_its_queue() -> None:
    placement = TaskPlacement()
    placement.learn(TASKS, 3)
    cancel = Outbound(TASKS, b"a/1", b"cancel", every_partition=True)
    placed = placement.place([_task(b"b/1"), cancel])
    assert placed[0].partition == 0
    assert [(r.partition, r.key, r.every_partition) for r in placed[1:]] == [
        (0, b"a/1", False),
        (1, b"a/1", False),
        (2, b"a/1", False),
    ]
