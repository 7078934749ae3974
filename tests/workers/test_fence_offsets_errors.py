"""The committed offsets a new owner fences with: a partition's own error is no "nothing
committed" (no broker: the consumer's answer is made up here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from runtime.engine import WorkflowRegistry
from workers.membership import Member
from workers.workflow_worker import WorkflowWorker, WorkflowWorkerConfig


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


def _worker(tmp_path: Path, answers: list[list[_Answer]]) -> WorkflowWorker:
    member = Member("127.0.0.1:1", "ns", "w-1")
    worker = WorkflowWorker(WorkflowWorkerConfig(member=member, state_dir=tmp_path),
                            WorkflowRegistry([]))  # fmt: skip
    worker._consumer = _Consumer(answers)  # type: ignore[assignment]
    return worker


def test_a_transient_partition_error_is_asked_again(tmp_path: Path) -> None:
    """It came back as offset -1001 with an error, was taken for "never committed", and
    the fence offset became the partition's start: the inbox would be read again."""
    timed_out = KafkaError(KafkaError._TIMED_OUT)
    worker = _worker(tmp_path, [
        [_Answer("ns.inbox", 0, -1001, timed_out), _Answer("ns.inbox", 1, 7)],
        [_Answer("ns.inbox", 0, 42), _Answer("ns.inbox", 1, 7)],
    ])  # fmt: skip
    worker._learn_fence_offsets([0, 1])
    assert worker._fence_offsets == {0: 42, 1: 7}


def test_a_lasting_partition_error_is_raised(tmp_path: Path) -> None:
    refused = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    worker = _worker(tmp_path, [[_Answer("ns.inbox", 0, -1001, refused)]])
    with pytest.raises(KafkaException):
        worker._learn_fence_offsets([0])
    assert worker._fence_offsets == {}


def test_nothing_committed_fences_at_the_partition_s_start(tmp_path: Path) -> None:
    worker = _worker(tmp_path, [[_Answer("ns.inbox", 0, -1001)]])
    worker._learn_fence_offsets([0])
    assert worker._fence_offsets == {0: 0}
