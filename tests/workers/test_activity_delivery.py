"""The activity worker's bookkeeping around Kafka: a report Kafka did not take, records of
a partition it no longer holds, heartbeats held back by the rate limit.

No broker: the worker's clients point at a port nothing listens on and are never waited
for; what Kafka would call back (delivery reports, rebalance callbacks) is called here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from runtime.engine import ActivityRegistry
from runtime.messages import ActivityCompletedReport, ActivityTask
from runtime.payloads import Payload
from topics import serde
from topics.catalogue import TopicNames
from workers import activity_worker
from workers.activity_worker import ActivityWorker, ActivityWorkerConfig
from workers.membership import Member

TASKS = TopicNames("ns").tasks("q")


@pytest.fixture
def worker() -> Iterator[ActivityWorker]:
    member = Member("127.0.0.1:1", "ns", "w-1")
    worker = ActivityWorker(
        ActivityWorkerConfig(member, "q"), ActivityRegistry([]), ActivityRegistry([]).converter
    )
    yield worker
    worker._executor.shutdown(wait=False)


def _capture_produced(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each produced report's delivery callback, in order."""
    callbacks: list[Any] = []

    def produce(_producer: Any, _topic: str, **kwargs: Any) -> None:
        callbacks.append(kwargs["on_delivery"])

    monkeypatch.setattr(activity_worker, "produce_when_room", produce)
    return callbacks


def test_a_report_kafka_did_not_take_is_produced_again_and_only_then_finished(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    callbacks = _capture_produced(monkeypatch)
    finished: list[bool] = []
    report = ActivityCompletedReport("wf", "run", 1, 1, None)

    worker._report(report, on_delivered=lambda: finished.append(True))
    callbacks[0](KafkaError(KafkaError._MSG_TIMED_OUT), None)

    assert len(callbacks) == 2 and finished == []  # sent again; the offset stays open
    callbacks[1](None, None)
    assert finished == [True]


async def test_records_of_a_revoked_partition_are_not_run(worker: ActivityWorker) -> None:
    worker._on_assign(worker._consumer, [TopicPartition(TASKS, 0), TopicPartition(TASKS, 1)])
    worker._on_revoke(worker._consumer, [TopicPartition(TASKS, 1)])

    worker._dispatch(_message(partition=1))  # consumed before the revocation

    assert 1 not in worker._progress and worker._tasks == set()
    worker._dispatch(_message(partition=0))  # a partition it holds: the task runs
    assert 0 in worker._progress and len(worker._tasks) == 1
    await asyncio.gather(*worker._tasks)


class _FakeMessage:
    """What `Consumer.consume` returns, for one task-topic record."""

    def __init__(self, partition: int, offset: int, seq: int) -> None:
        self._partition, self._offset, self._seq = partition, offset, seq

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TASKS

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"wf/1"

    def value(self) -> bytes:
        return serde.encode_task(
            ActivityTask("wf", "run", "T", self._seq, 1, "unknown", "q", (), 0, 10_000, 0)
        )

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def _message(partition: int, offset: int = 7, seq: int = 1) -> Any:
    return _FakeMessage(partition, offset, seq)


async def test_a_second_delivery_of_a_running_attempt_finishes_with_it(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    callbacks = _capture_produced(monkeypatch)
    worker._on_assign(worker._consumer, [TopicPartition(TASKS, 0)])
    worker._dispatch(_message(partition=0, offset=7))
    worker._dispatch(_message(partition=0, offset=9))  # the same attempt again

    assert len(worker._tasks) == 1  # not run a second time alongside
    await asyncio.gather(*worker._tasks)
    (report_delivered,) = callbacks  # one outcome reported
    report_delivered(None, None)
    assert worker._progress[0].commit_point() == 10  # both offsets done


async def test_heartbeats_held_back_are_sent_at_the_end_of_the_interval(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat timeout of 100 ms: at most one heartbeat per 80 ms, and the newest
    details of an interval are sent when it ends, never dropped."""
    callbacks = _capture_produced(monkeypatch)
    sent: list[Any] = []

    def encode(message: Any) -> bytes:
        sent.append(message)
        return b"report"

    monkeypatch.setattr(activity_worker, "encode_report", encode)
    task = ActivityTask("wf", "run", "T", 1, 1, "beats", "q", (), 0, 10_000, 100)
    running = activity_worker._Running(task, asyncio.Event())
    first, second, third = (Payload("json/plain", str(n).encode()) for n in range(3))

    worker._heartbeat(running, (first,))
    worker._heartbeat(running, (second,))
    worker._heartbeat(running, (third,))
    assert [m.details for m in sent] == [(first,)]  # the other two within the interval

    await asyncio.sleep(0.3)
    assert [m.details for m in sent] == [(first,), (third,)]  # the newest, once
    assert len(callbacks) == 2


async def test_a_stop_cancels_what_still_runs_after_the_drain(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _capture_produced(monkeypatch)
    monkeypatch.setattr(
        worker, "_config", ActivityWorkerConfig(worker._config.member, "q", drain_s=0)
    )
    task = ActivityTask("wf", "run", "T", 1, 1, "slow", "q", (), 0, 0, 0)
    running = activity_worker._Running(task, asyncio.Event())
    worker._running[("wf", "run", 1, 1)] = running

    async def until_cancelled() -> None:  # an activity that honours cancellation
        await running.cancelled.wait()

    honours_cancel = asyncio.create_task(until_cancelled())
    worker._tasks.add(honours_cancel)

    await worker._drain()

    assert running.cancelled.is_set() and honours_cancel.done()


async def test_tasks_beyond_the_limit_wait_their_turn_and_pause_only_a_full_queue(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _capture_produced(monkeypatch)
    monkeypatch.setattr(worker, "_config", ActivityWorkerConfig(worker._config.member, "q", 2))
    consumer = _PausingConsumer()
    monkeypatch.setattr(worker, "_consumer", consumer)
    paused = consumer.calls
    worker._on_assign(worker._consumer, [TopicPartition(TASKS, 0)])
    for n in range(5):
        worker._dispatch(_message(partition=0, offset=n, seq=n))

    assert len(worker._tasks) == 2 and len(worker._queued) == 3  # two run, three wait
    worker._apply_backpressure()
    assert paused == [True]  # as many wait as may run
    await asyncio.sleep(0.1)  # the unknown activity fails at once: the queue drains
    assert worker._tasks == set() and not worker._queued
    worker._apply_backpressure()
    assert paused == [True, False]


class _PausingConsumer:
    """Records the worker's pause and resume calls."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TASKS, 0)]

    def pause(self, _partitions: list[TopicPartition]) -> None:
        self.calls.append(True)

    def resume(self, _partitions: list[TopicPartition]) -> None:
        self.calls.append(False)
