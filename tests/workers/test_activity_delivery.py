"""The activity worker's bookkeeping around Kafka: a report Kafka did not take, records of
a partition it no longer holds, heartbeats held back by the rate limit.

No broker: the worker's clients point at a port nothing listens on and are never waited
for; what Kafka would call back (delivery reports, rebalance callbacks) is called here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from structlog.testing import capture_logs

from runtime import activity
from runtime.engine import ActivityRegistry
from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityTask,
    CancelActivityTask,
)
from runtime.payloads import Payload
from topics import serde
from topics.catalogue import TopicNames
from workers import activity_report_sender, activity_worker
from workers.activity_attempts import CancelReason, RunningAttempt
from workers.activity_worker import ActivityWorker, ActivityWorkerConfig
from workers.membership import Member
from workers.offsets import PartitionProgress

TASKS = TopicNames("ns").tasks("q")


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[ActivityWorker]:
    # No group coordinator to look committed offsets up from, and no assignment to add to.
    monkeypatch.setattr(activity_worker, "assign_at_committed", lambda _consumer, _tps: None)
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

    monkeypatch.setattr(activity_report_sender, "produce_when_room", produce)
    return callbacks


def test_a_report_kafka_did_not_take_is_produced_again_and_only_then_finished(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    callbacks = _capture_produced(monkeypatch)
    finished: list[bool] = []
    report = ActivityCompletedReport("wf", "run", 1, 1, None)

    worker._reports.send(report, on_delivered=lambda: finished.append(True))
    callbacks[0](KafkaError(KafkaError._MSG_TIMED_OUT), None)

    assert len(callbacks) == 2 and finished == []  # sent again; the offset stays open
    callbacks[1](None, None)
    assert finished == [True]


def _refusing(monkeypatch: pytest.MonkeyPatch, code: int, times: int) -> list[Any]:
    """``produce_when_room`` refusing the first ``times`` reports with ``code`` (as
    librdkafka's ``produce`` raises), then taking them: each taken one's delivery callback."""
    callbacks: list[Any] = []
    refusals = iter(range(times))

    def produce(_producer: Any, _topic: str, **kwargs: Any) -> None:
        if next(refusals, None) is not None:
            raise KafkaException(KafkaError(code))
        callbacks.append(kwargs["on_delivery"])

    monkeypatch.setattr(activity_report_sender, "produce_when_room", produce)
    return callbacks


async def test_a_report_the_producer_refuses_for_a_moment_is_offered_again(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal raised by ``produce`` (a topic whose metadata is not there yet) ended the
    attempt's task with its offset finished and no report: the outcome was lost, and the
    workflow waited for the activity's timeout."""
    callbacks = _refusing(monkeypatch, KafkaError._UNKNOWN_TOPIC, times=2)
    worker._on_assign(worker._consumer, [TopicPartition(TASKS, 0)])
    worker._dispatch(_message(partition=0, offset=7))  # an unknown type: it fails at once
    await _finished(worker, 5)

    for _ in range(50):
        if callbacks:
            break
        await asyncio.sleep(0.05)
    assert len(callbacks) == 1  # taken on the third offer
    assert worker._progress[0].in_flight == 1  # not finished before Kafka has it
    callbacks[0](None, None)
    assert worker._progress[0].commit_point() == 8


async def test_a_report_the_producer_refuses_for_good_leaves_its_offset_uncommitted(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At-least-once: an attempt whose outcome never reached Kafka runs again on the
    partition's next owner, instead of being committed as done."""
    _refusing(monkeypatch, KafkaError.TOPIC_AUTHORIZATION_FAILED, times=1)
    worker._on_assign(worker._consumer, [TopicPartition(TASKS, 0)])

    with capture_logs() as logs:
        worker._dispatch(_message(partition=0, offset=7))
        await _finished(worker, 5)

    assert worker._progress[0].in_flight == 1
    [entry] = [e for e in logs if e["event"].startswith("activity report not produced")]
    assert "offset stays uncommitted" in entry["event"]
    assert (entry["log_level"], entry["report"]) == ("error", "ActivityFailedReport")
    assert "TOPIC_AUTHORIZATION_FAILED" in entry["error"]


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

    def __init__(
        self, partition: int, offset: int, seq: int, task: ActivityTask | None = None
    ) -> None:
        self._partition, self._offset, self._seq = partition, offset, seq
        self._task = task or ActivityTask(
            "wf", "run", "T", seq, 1, "unknown", "q", (), 0, 10_000, 0
        )

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
        return serde.encode_task(self._task)

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def _message(
    partition: int, offset: int = 7, seq: int = 1, task: ActivityTask | None = None
) -> Any:
    return _FakeMessage(partition, offset, seq, task)


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

    def encode(message: Any, _limit: int) -> bytes:
        sent.append(message)
        return b"report"

    monkeypatch.setattr(activity_report_sender, "encode_report", encode)
    task = ActivityTask("wf", "run", "T", 1, 1, "beats", "q", (), 0, 10_000, 100)
    running = RunningAttempt(task, asyncio.Event())
    first, second, third = (Payload("json/plain", str(n).encode()) for n in range(3))

    worker._heartbeats.heartbeat(running, (first,))
    worker._heartbeats.heartbeat(running, (second,))
    worker._heartbeats.heartbeat(running, (third,))
    assert [m.details for m in sent] == [(first,)]  # the other two within the interval

    await asyncio.sleep(0.3)
    assert [m.details for m in sent] == [(first,), (third,)]  # the newest, once
    assert len(callbacks) == 2


async def test_a_stop_cancels_what_still_runs_after_the_drain(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _capture_produced(monkeypatch)
    monkeypatch.setattr(
        worker, "_config", ActivityWorkerConfig(worker._config.member, "q", graceful_shutdown_s=0)
    )
    task = ActivityTask("wf", "run", "T", 1, 1, "slow", "q", (), 0, 0, 0)
    running = RunningAttempt(task, asyncio.Event())
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


@activity.defn
async def hangs() -> None:
    await asyncio.sleep(3600)


@activity.defn
async def beats_then_hangs() -> None:
    for _ in range(6):  # every 50 ms for 300 ms: within a 150 ms heartbeat timeout
        activity.heartbeat()
        await asyncio.sleep(0.05)
    await asyncio.sleep(3600)


HUNG = ActivityTask("wf", "run", "T", 1, 1, "hangs", "q", (), 0, 0, 0)


def _hosting(worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The worker with the two hanging activities; what it reports, decoded."""
    worker._registry = ActivityRegistry([hangs, beats_then_hangs])
    reports: list[Any] = []

    def produce(_producer: Any, _topic: str, **kwargs: Any) -> None:
        reports.append(serde.decode_inbox(kwargs["value"]))

    monkeypatch.setattr(activity_report_sender, "produce_when_room", produce)
    worker._on_assign(worker._consumer, [TopicPartition(TASKS, 0)])
    return reports


async def _finished(worker: ActivityWorker, within_s: float) -> None:
    """Wait for every task to finish; fail after ``within_s``."""
    await asyncio.wait_for(asyncio.gather(*worker._tasks), within_s)


async def test_an_attempt_past_its_schedule_to_close_deadline_frees_its_slot(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a start-to-close timeout: only the deadline the task carries stops it, even
    if the workflow's cancellation never gets through."""
    reports = _hosting(worker, monkeypatch)
    deadline = replace(HUNG, close_deadline_ms=int(time.time() * 1000) + 200)

    worker._dispatch(_message(partition=0, task=deadline))

    await asyncio.sleep(0.05)
    assert len(worker._tasks) == 1  # the deadline has not come yet
    await _finished(worker, 5)
    (report,) = reports
    assert isinstance(report, ActivityFailedReport)
    assert (report.failure.kind, report.failure.timeout_type) == ("timeout", "schedule_to_close")


async def test_an_attempt_silent_for_its_heartbeat_timeout_frees_its_slot(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = _hosting(worker, monkeypatch)
    beating = replace(HUNG, activity_type="beats_then_hangs", heartbeat_timeout_ms=150)

    worker._dispatch(_message(partition=0, task=beating))

    await asyncio.sleep(0.2)  # longer than the timeout, heartbeating every 50 ms
    assert len(worker._tasks) == 1  # not stopped while it heartbeat
    await _finished(worker, 5)
    assert isinstance(reports[-1], ActivityFailedReport)
    assert (reports[-1].failure.kind, reports[-1].failure.timeout_type) == ("timeout", "heartbeat")


class _CommitsConsumer(_PausingConsumer):
    """Records commits; closes like a consumer that held nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[list[tuple[int, int]]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])

    def consume(self, _count: int, _timeout: float) -> list[Any]:
        """A stop polls while it waits for running activities: nothing more arrives."""
        return []

    def close(self) -> None:
        pass


async def test_an_activity_still_running_at_the_stop_is_not_reported_and_runs_again(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reporting it "cancelled" spent the attempt (the engine retried with the next one)
    or, on the last attempt, failed the activity with a cancellation no one asked for; and
    the report's delivery committed its offset, so it did not run again either."""
    reports = _hosting(worker, monkeypatch)
    consumer = _CommitsConsumer()
    monkeypatch.setattr(worker, "_consumer", consumer)
    monkeypatch.setattr(
        worker,
        "_config",
        ActivityWorkerConfig(worker._config.member, "q", graceful_shutdown_s=0.05),
    )
    worker._dispatch(_message(partition=0, offset=7, task=HUNG))
    await asyncio.sleep(0.01)

    await worker._drain()

    assert reports == []  # the workflow hears nothing: the attempt is still its current one
    assert worker._tasks == set()  # yet the slot was given up
    assert consumer.commits == [[(0, 7)]]  # the task is delivered again to the next owner


async def test_an_attempt_past_its_start_to_close_timeout_is_reported_timed_out(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine times the attempt out by itself; when the worker's report of the same
    deadline comes first, it must say what the engine would (a timeout, which a workflow
    tells apart from a cancellation), not "cancelled"."""
    reports = _hosting(worker, monkeypatch)
    worker._dispatch(_message(partition=0, task=replace(HUNG, start_to_close_timeout_ms=100)))

    await _finished(worker, 5)
    (report,) = reports
    assert isinstance(report, ActivityFailedReport)
    assert (report.failure.kind, report.failure.timeout_type) == ("timeout", "start_to_close")


async def test_an_attempt_the_workflow_cancelled_is_reported_cancelled(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = _hosting(worker, monkeypatch)
    worker._dispatch(_message(partition=0, offset=7, task=HUNG))
    await asyncio.sleep(0.01)
    cancel = CancelActivityTask("wf", "run", 1, 1, "q")
    worker._dispatch(cast(Message, _FakeRecord(0, 8, serde.encode_task(cancel))))

    await _finished(worker, 5)
    (report,) = reports
    assert isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"


class _FakeRecord(_FakeMessage):
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        super().__init__(partition, offset, 0)
        self._value = value

    def value(self) -> bytes:
        return self._value


async def test_rebalance_callbacks_from_the_polling_thread_change_state_on_the_loop(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka calls them in the thread that polls (the worker's poll thread), while
    the loop starts and ends tasks: revoking a partition while tasks queued raised "deque
    mutated during iteration" out of the poll, and `del self._running[...]` of a task
    ending at that moment raised KeyError."""
    _hosting(worker, monkeypatch)
    monkeypatch.setattr(worker, "_config", ActivityWorkerConfig(worker._config.member, "q", 1))
    monkeypatch.setattr(worker, "_consumer", _CommitsConsumer())
    loop_thread = threading.get_ident()
    touched: list[int] = []

    class Watched(deque[Any]):
        def __iter__(self) -> Iterator[Any]:
            touched.append(threading.get_ident())
            return super().__iter__()

    worker._loop = asyncio.get_running_loop()
    await asyncio.to_thread(worker._on_assign, worker._consumer, [TopicPartition(TASKS, 1)])
    assert worker._assigned == {0, 1}
    for n in range(4):  # one runs, three wait: 1 and 3 on partition 1
        worker._dispatch(_message(partition=n % 2, offset=n, task=replace(HUNG, seq=n)))
    worker._queued = Watched(worker._queued)

    await asyncio.to_thread(worker._on_revoke, worker._consumer, [TopicPartition(TASKS, 1)])

    assert touched and set(touched) == {loop_thread}
    assert [q.running.task.seq for q in worker._queued] == [2]  # partition 1's are dropped
    assert sorted(key[2] for key in worker._running) == [0, 2]
    for running in worker._running.values():
        running.cancel(CancelReason.REQUESTED)
    await _finished(worker, 5)


cleaned_up: list[str] = []


@activity.defn
async def cleans_up_when_cancelled() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(0.2)  # closes a connection, releases a lease...
        cleaned_up.append("done")
        raise


async def test_a_stop_lets_a_cancelled_async_activity_finish_its_cleanup(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt ended the moment it was cancelled, the activity's coroutine left running
    on its own: the stop did not wait for its cleanup, which the process's exit then cut
    short (or the loop cancelled again, mid-cleanup)."""
    _hosting(worker, monkeypatch)
    worker._registry = ActivityRegistry([cleans_up_when_cancelled])
    monkeypatch.setattr(worker, "_consumer", _CommitsConsumer())
    monkeypatch.setattr(
        worker,
        "_config",
        ActivityWorkerConfig(worker._config.member, "q", graceful_shutdown_s=0.05),
    )
    cleaned_up.clear()
    task = replace(HUNG, activity_type="cleans_up_when_cancelled")
    worker._dispatch(_message(partition=0, task=task))
    await asyncio.sleep(0.01)

    await worker._drain()

    assert cleaned_up == ["done"]


async def test_a_commit_kafka_refused_is_committed_again(worker: ActivityWorker) -> None:
    """An idle partition's last commit refused (a rebalance under way) stayed refused: a
    restart then ran its finished tasks again."""
    worker._loop = asyncio.get_running_loop()
    progress = worker._progress[0] = PartitionProgress()
    progress.started(6)
    progress.finished(6)
    assert worker._offsets() == [TopicPartition(TASKS, 0, 7)]
    assert worker._offsets() == []

    refused = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    await asyncio.to_thread(worker._on_commit, refused, [TopicPartition(TASKS, 0, 7)])
    await asyncio.sleep(0)  # what the polling thread handed to the loop

    assert worker._offsets() == [TopicPartition(TASKS, 0, 7)]


class _PollingConsumer(_CommitsConsumer):
    """A consumer whose poll is under way until released, and whose close, like
    librdkafka's, runs the revoke callback in the thread that closes and waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.polling = threading.Event()
        self.release = threading.Event()
        self.in_poll = False
        self.closed_during_poll: bool | None = None
        self.on_revoke: Any = None

    def subscribe(self, _topics: list[str], **callbacks: Any) -> None:
        self.on_revoke = callbacks["on_revoke"]

    def poll_once(self) -> list[Any]:
        self.in_poll = True
        self.polling.set()
        self.release.wait(5)
        self.in_poll = False
        return []

    def close(self) -> None:
        self.closed_during_poll = self.in_poll
        self.on_revoke(self, [TopicPartition(TASKS, 0)])


async def test_a_cancelled_run_closes_the_consumer_after_the_poll_under_way(
    worker: ActivityWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled `run` (``asyncio.run`` cancels what is left when its main returns) went
    on to close the consumer in the loop's thread while the polling thread was still in
    the poll: librdkafka's close and poll ran at once, and a rebalance callback of that
    poll waited on a loop blocked in the close. The close waits for the poll's end."""
    consumer = _PollingConsumer()
    monkeypatch.setattr(worker, "_consumer", consumer)
    monkeypatch.setattr(worker._admin, "ensure_task_queue", lambda *_: 1)
    monkeypatch.setattr(worker._admin, "max_message_bytes", lambda *_: None)
    monkeypatch.setattr(activity_worker, "consume_available", lambda c, *_: c.poll_once())
    running = asyncio.create_task(worker.run(asyncio.Event()))
    assert await asyncio.to_thread(consumer.polling.wait, 5)

    running.cancel()
    await asyncio.sleep(0.1)  # the drain: no task to wait for, on to the close
    consumer.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)

    assert consumer.closed_during_poll is False
