"""How a worker looks up the committed offsets of the partitions it is given, to assign
them (`workers.assignment`) and to fence with them (`workers.fence_offsets`): a
coordinator that is passing is asked again, an error that lasts is raised (a partition's
own error is no "nothing committed"), and nothing committed starts at the beginning. The
consumer's answers are made up here; `tests/kafka/test_assignment.py` is the real one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import click
import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from workers import assignment
from workers.cli import ChronikGroup
from workers.fence_offsets import FenceOffsets


@dataclass
class _Answer:
    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class _Consumer:
    """Answers each `committed` call with the next answer, or raises it."""

    def __init__(self, answers: list[list[_Answer] | KafkaError]) -> None:
        self.answers = answers
        self.asked = 0
        self.assigned: list[TopicPartition] | None = None

    def committed(self, wanted: list[TopicPartition], timeout: float) -> list[_Answer]:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, KafkaError):
            raise KafkaException(answer)
        return answer

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def get_watermark_offsets(self, _tp: object, timeout: float) -> tuple[int, int]:
        return 3, 100


def _given(*numbers: int) -> list[TopicPartition]:
    return [TopicPartition("ns.inbox", n) for n in numbers]


@pytest.mark.parametrize(
    "passing",
    [
        KafkaError.NOT_COORDINATOR,  # the request-level answer librdkafka#5586 never retries
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
    ],
)
def test_a_passing_coordinator_error_is_asked_again(passing: int) -> None:
    consumer = _Consumer([KafkaError(passing), [_Answer("ns.inbox", 0, 42)]])
    committed = assignment.committed_offsets(cast(Consumer, consumer), _given(0))
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 42)]
    assert consumer.asked == 2


def test_an_unstable_partition_is_asked_again() -> None:
    """A dead owner's transaction still open on the partition: its offset is not known yet."""
    unstable = KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT)
    consumer = _Consumer([
        [_Answer("ns.inbox", 0, -1001, unstable), _Answer("ns.inbox", 1, 7)],
        [_Answer("ns.inbox", 0, 42), _Answer("ns.inbox", 1, 7)],
    ])  # fmt: skip
    committed = assignment.committed_offsets(cast(Consumer, consumer), _given(0, 1))
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 42), (1, 7)]


def test_a_lasting_partition_error_is_raised() -> None:
    """Taken for "nothing committed", it made the partition start from its beginning, and
    a commit would have written that back as the group's position."""
    refused = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    consumer = _Consumer([[_Answer("ns.inbox", 0, -1001, refused)]])
    with pytest.raises(assignment.CommittedOffsetsError, match=r"ns\.inbox\[0\]"):
        assignment.committed_offsets(cast(Consumer, consumer), _given(0))


def test_a_lasting_error_is_raised_without_asking_again() -> None:
    refused = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    consumer = _Consumer([refused, [_Answer("ns.inbox", 0, 1)]])
    with pytest.raises(assignment.CommittedOffsetsError, match="GROUP_AUTHORIZATION_FAILED"):
        assignment.committed_offsets(cast(Consumer, consumer), _given(0))
    assert consumer.asked == 1


def test_a_coordinator_away_past_the_patience_is_raised() -> None:
    away = KafkaError(KafkaError.NOT_COORDINATOR)
    consumer = _Consumer([away] * 100)
    with pytest.raises(assignment.CommittedOffsetsError, match="NOT_COORDINATOR"):
        assignment.committed_offsets(cast(Consumer, consumer), _given(0), patience_s=0.3)
    assert 1 < consumer.asked < 100


def test_partitions_are_assigned_at_explicit_offsets() -> None:
    """No partition is left for librdkafka to look up: nothing committed is the beginning."""
    consumer = _Consumer([[_Answer("ns.inbox", 0, 42), _Answer("ns.inbox", 1, -1001)]])
    assignment.assign_at_committed(cast(Consumer, consumer), _given(0, 1))
    assert consumer.assigned is not None
    assert [(tp.topic, tp.partition, tp.offset) for tp in consumer.assigned] == [
        ("ns.inbox", 0, 42),
        ("ns.inbox", 1, OFFSET_BEGINNING),
    ]


def test_nothing_given_asks_nothing() -> None:
    consumer = _Consumer([])
    assert assignment.committed_offsets(cast(Consumer, consumer), []) == []
    assert consumer.asked == 0


def test_the_fence_offset_of_a_partition_with_nothing_committed_is_its_start() -> None:
    consumer = _Consumer([[_Answer("ns.inbox", 0, -1001), _Answer("ns.inbox", 1, 7)]])
    fence = FenceOffsets(cast(Consumer, consumer), "ns.inbox")
    fence.learn([0, 1])
    assert fence.offsets == {0: 3, 1: 7}  # partition 0's low watermark


def test_a_worker_that_cannot_read_its_offsets_stops_in_one_line() -> None:
    """As a fenced one does: ``Error: <why>`` and exit code 1, for a supervisor to restart."""

    @click.group(cls=ChronikGroup)
    def root() -> None: ...

    @root.command()
    def stuck() -> None:
        raise assignment.CommittedOffsetsError("cannot read the committed offsets of ns.inbox[0]")

    result = CliRunner().invoke(root, ["stuck"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: cannot read the committed offsets of ns.inbox[0]\n",
    )


def test_the_fence_starts_from_what_the_assignment_looked_up_without_asking_again() -> None:
    """The assignment looked the committed offsets up a moment before; asking again at the
    restore cost another round trip to the coordinator for every assignment."""
    consumer = _Consumer([])  # any committed() lookup would fail: no answer left
    fence = FenceOffsets(cast(Consumer, consumer), "ns.inbox")
    fence.assigned([TopicPartition("ns.inbox", 0, 42), TopicPartition("ns.inbox", 1, -1001)])
    fence.learn([0, 1])
    assert fence.offsets == {0: 42, 1: 3}  # partition 1: nothing committed, its low watermark
    assert consumer.asked == 0
