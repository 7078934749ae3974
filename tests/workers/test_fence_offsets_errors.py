"""The committed offsets a new owner fences with: a partition's own error is no "nothing
committed" (no broker: the consumer's answer is made up here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from workers.fence_offsets import FenceOffsets


@dataclass
class _Answer:
    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class _Consumer:
    def __init__(self, answers: list[list[_Answer]]) -> None:
        self.answers = answers

    def committed(self, wanted: list[TopicPartition], timeout: float) -> list[_Answer]:
        return self.answers.pop(0)

    def get_watermark_offsets(self, _tp: object, timeout: float) -> tuple[int, int]:
        return 0, 100


def _fence(answers: list[list[_Answer]]) -> FenceOffsets:
    return FenceOffsets(cast(Consumer, _Consumer(answers)), "ns.inbox")


def test_a_transient_partition_error_is_asked_again() -> None:
    """It came back as offset -1001 with an error, was taken for "never committed", and
    the fence offset became the partition's start: the inbox would be read again."""
    timed_out = KafkaError(KafkaError._TIMED_OUT)
    fence = _fence([
        [_Answer("ns.inbox", 0, -1001, timed_out), _Answer("ns.inbox", 1, 7)],
        [_Answer("ns.inbox", 0, 42), _Answer("ns.inbox", 1, 7)],
    ])  # fmt: skip
    fence.learn([0, 1])
    assert fence.offsets == {0: 42, 1: 7}


def test_a_lasting_partition_error_is_raised() -> None:
    refused = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    fence = _fence([[_Answer("ns.inbox", 0, -1001, refused)]])
    with pytest.raises(KafkaException):
        fence.learn([0])
    assert fence.offsets == {}


def test_nothing_committed_fences_at_the_partition_s_start() -> None:
    fence = _fence([[_Answer("ns.inbox", 0, -1001)]])
    fence.learn([0])
    assert fence.offsets == {0: 0}
