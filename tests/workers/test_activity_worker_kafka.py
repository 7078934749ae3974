"""The activity worker's consumer against the real broker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from runtime import activity
from runtime.engine import ActivityRegistry
from runtime.engine.activity_executor import CANCEL_GRACE_S
from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityTask,
    InboxMessage,
)
from runtime.payloads import Payload
from tests.integration.kafka_reading import read_topic
from tests.kafka.topic_config import set_topic_config
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.consumed import consume_available
from workers import activity_report_sender
from workers.activity_worker import ActivityWorker, ActivityWorkerConfig
from workers.membership import SESSION_TIMEOUT_MS, Member
from workers.metrics import ActivityWorkerMetrics

pytestmark = pytest.mark.kafka


async def test_partitions_assigned_while_the_worker_is_paused_start_paused(
    kafka_bootstrap: str, namespace: str
) -> None:
    """A worker whose local queue is full keeps its partitions paused. Those a rebalance
    gives it meanwhile (another worker left: load is high) were paused inside the assign
    callback, before librdkafka assigned them — which has no effect — so their records
    flowed in, and the local queue grew without bound."""
    names = TopicNames(namespace)
    admin = TopicAdmin({"bootstrap.servers": kafka_bootstrap})
    admin.ensure_task_queue(Catalogue(namespace), "q")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    task = ActivityTask("wf", "run", "T", 1, 1, "any", "q", (), 0, 10_000, 0)
    for _ in range(5):
        producer.produce(names.tasks("q"), key=b"wf/1", value=serde.encode_task(task))
    assert producer.flush(10) == 0
    registry = ActivityRegistry([])
    worker = ActivityWorker(
        ActivityWorkerConfig(Member(kafka_bootstrap, namespace, "w-1"), "q"),
        registry,
        registry.converter,
    )
    worker._loop = asyncio.get_running_loop()
    worker._paused = True  # as many tasks wait as may run
    consumer = worker._consumer
    consumer.subscribe([names.tasks("q")], on_assign=worker._on_assign, on_revoke=worker._on_revoke)
    try:
        received = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            records = await asyncio.to_thread(consume_available, consumer, 100, 0.2)
            received += len([r for r in records if r.error() is None])
        assert worker._assigned  # it did get the partitions
        assert received == 0
    finally:
        await asyncio.to_thread(consumer.close)
        worker._executor.shutdown(wait=False)


released = threading.Event()


@activity.defn
def holds_its_thread() -> None:
    released.wait(60)  # never reads activity.is_cancelled()


@pytest.fixture
def holding() -> Iterator[None]:
    released.clear()
    try:
        yield
    finally:
        released.set()


def _send_tasks(kafka_bootstrap: str, namespace: str, *tasks: ActivityTask) -> None:
    """Put ``tasks`` on the namespace's task queue ``q`` (made if need be)."""
    names = TopicNames(namespace)
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).ensure_task_queue(Catalogue(namespace), "q")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for task in tasks:
        key = f"{task.workflow_id}/{task.seq}".encode()
        producer.produce(names.tasks("q"), key=key, value=serde.encode_task(task))
    assert producer.flush(10) == 0


def _worker(member: Member, *activities: Any, **config: Any) -> ActivityWorker:
    """A worker of task queue ``q`` running ``activities``."""
    registry = ActivityRegistry(list(activities))
    return ActivityWorker(ActivityWorkerConfig(member, "q", **config), registry, registry.converter)


async def _until_abandoned(
    logs: list[MutableMapping[str, Any]], running: asyncio.Task[None]
) -> None:
    """Wait for the worker to log an abandoned attempt (it must not end first)."""
    deadline = time.monotonic() + 30 + CANCEL_GRACE_S
    while not [e for e in logs if e["event"].startswith("activity abandoned")]:
        assert time.monotonic() < deadline and not running.done()
        await asyncio.sleep(0.1)


async def test_an_attempt_timed_out_with_its_thread_still_running_is_logged_as_abandoned(
    kafka_bootstrap: str, namespace: str, holding: None
) -> None:
    """The slot is freed and the timeout reported, but the thread runs on, unseen: the
    log is where an operator learns which activity holds it."""
    task = ActivityTask("wf", "run", "T", 1, 1, "holds_its_thread", "q", (), 0, 200, 0)
    _send_tasks(kafka_bootstrap, namespace, task)
    worker = _worker(Member(kafka_bootstrap, namespace, "w-1"), holds_its_thread)
    stop = asyncio.Event()

    with capture_logs() as logs:
        running = asyncio.create_task(worker.run(stop))
        await _until_abandoned(logs, running)
        stop.set()
        await running

    [entry] = [e for e in logs if e["event"].startswith("activity abandoned")]
    assert (entry["idempotency_key"], entry["reason"]) == (task.idempotency_key, "start_to_close")
    assert entry["reported"] is True  # the timeout the engine records


ran = threading.Event()


@activity.defn
def answers_at_once() -> None:
    ran.set()


async def test_a_thread_held_by_an_abandoned_attempt_leaves_the_pool_its_size(
    kafka_bootstrap: str, namespace: str, holding: None
) -> None:
    """The worker frees an abandoned attempt's slot, and its pool had ``max_concurrent``
    threads: each attempt left running took one for good, and once they all were, every
    later sync activity waited for a thread until its deadline timed it out, never run
    (and logged as abandoned too)."""
    ran.clear()
    hung = ActivityTask("wf", "run", "T", 1, 1, "holds_its_thread", "q", (), 0, 200, 0)
    quick = ActivityTask("wf", "run", "T", 2, 1, "answers_at_once", "q", (), 0, 15_000, 0)
    member = Member(kafka_bootstrap, namespace, "w-1")
    worker = _worker(member, holds_its_thread, answers_at_once, max_concurrent=1)
    stop = asyncio.Event()

    with capture_logs() as logs:
        running = asyncio.create_task(worker.run(stop))
        try:
            _send_tasks(kafka_bootstrap, namespace, hung)
            await _until_abandoned(logs, running)
            _send_tasks(kafka_bootstrap, namespace, quick)
            assert await asyncio.to_thread(ran.wait, 10)
        finally:
            stop.set()
            await running

    abandoned = [e["seq"] for e in logs if e["event"].startswith("activity abandoned")]
    assert abandoned == [1]


finishing = threading.Event()

#: ``max.poll.interval.ms`` of the next test's worker, in seconds: the least librdkafka
#: takes, the session timeout (`workers.membership`).
POLL_INTERVAL_S = SESSION_TIMEOUT_MS / 1000


@activity.defn
async def finishes_late() -> str:
    finishing.set()
    await asyncio.sleep(POLL_INTERVAL_S * 1.4)
    return "done"


async def test_an_activity_that_finishes_in_a_long_graceful_shutdown_has_its_offset_committed(
    kafka_bootstrap: str, namespace: str
) -> None:
    """The stop waits for running activities without polling; past ``max.poll.interval.ms``
    (5 min by default, and a graceful shutdown may be set longer, as in Temporal) the
    consumer had left its group, so the commit of an activity that then finished was
    refused and another worker ran it again."""
    finishing.clear()
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))  # an inbox
    _send_tasks(
        kafka_bootstrap,
        namespace,
        ActivityTask("wf", "run", "T", 1, 1, "finishes_late", "q", (), 0, 60_000, 0),
    )
    poll_interval = {"max.poll.interval.ms": int(POLL_INTERVAL_S * 1000)}
    member = Member(kafka_bootstrap, namespace, "w-1", poll_interval)
    worker = _worker(member, finishes_late, graceful_shutdown_s=POLL_INTERVAL_S * 3)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    assert await asyncio.to_thread(finishing.wait, 30)
    stop.set()
    await running

    assert _tasks_committed(member) == 1  # the one task, done


def _tasks_committed(member: Member) -> int:
    """How many tasks of queue ``q`` the worker group has committed, over its partitions."""
    names = TopicNames(member.namespace)
    group = Consumer(member.group_config(names.activity_group("q")))
    try:
        topic = names.tasks("q")
        partitions = group.list_topics(topic, timeout=10).topics[topic].partitions
        committed = group.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        group.close()
    return sum(max(tp.offset, 0) for tp in committed)


async def _reported(member: Member, running: asyncio.Task[None]) -> list[InboxMessage]:
    """What the worker reported to the inbox, once it reported anything (within 30 s)."""
    inbox = TopicNames(member.namespace).inbox
    deadline = time.monotonic() + 30
    while not (records := await asyncio.to_thread(read_topic, member.bootstrap_servers, inbox)):
        assert time.monotonic() < deadline and not running.done()
        await asyncio.sleep(0.2)
    return [serde.decode_inbox(record.value()) for record in records]


async def _report_of(member: Member, *activities: Any) -> InboxMessage:
    """Run the one task ``_send_tasks`` put on ``q`` with ``activities``: its one report."""
    worker = _worker(member, *activities)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        [report] = await _reported(member, running)
    finally:
        stop.set()
        await running
    assert _tasks_committed(member) == 1  # its outcome in, the task is done
    return report


@activity.defn
def fails_naming_a_file() -> None:
    name = b"rows-\xff.csv".decode(errors="surrogateescape")  # as os.listdir names it
    raise LookupError(f"no rows in {name}")


async def test_a_failure_utf8_cannot_encode_reaches_the_workflow(
    kafka_bootstrap: str, namespace: str
) -> None:
    """The report raised in its encoding, the task was committed as done anyway, and the
    workflow heard nothing until the activity's timeout: the error, and its retry, lost."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))  # an inbox
    task = ActivityTask("wf", "run", "T", 1, 1, "fails_naming_a_file", "q", (), 0, 60_000, 0)
    _send_tasks(kafka_bootstrap, namespace, task)

    report = await _report_of(Member(kafka_bootstrap, namespace, "w-1"), fails_naming_a_file)

    assert isinstance(report, ActivityFailedReport)
    failure = report.failure
    assert (failure.type, failure.non_retryable) == ("LookupError", False)
    assert failure.message == "no rows in rows-\\udcff.csv"


@activity.defn
def answers_at_length() -> str:
    return "x" * 100_000


async def test_a_result_over_a_lower_message_max_bytes_is_reported_too_large(
    kafka_bootstrap: str, namespace: str
) -> None:
    """``-X message.max.bytes=50000``: librdkafka refused the 100 KB result in ``produce``
    itself, and the attempt was committed as done without any report."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))
    task = ActivityTask("wf", "run", "T", 1, 1, "answers_at_length", "q", (), 0, 60_000, 0)
    _send_tasks(kafka_bootstrap, namespace, task)
    member = Member(kafka_bootstrap, namespace, "w-1", {"message.max.bytes": 50_000})

    report = await _report_of(member, answers_at_length)

    assert isinstance(report, ActivityFailedReport)
    assert (report.failure.type, report.failure.non_retryable) == ("RecordTooLarge", True)
    assert "the limit is 49,000" in report.failure.message


def _lower_inbox_limit(kafka_bootstrap: str, namespace: str, max_bytes: int) -> None:
    """Set the inbox's ``max.message.bytes`` as an operator would, and wait until the
    broker applies it (the change goes through the metadata log first)."""
    inbox = TopicNames(namespace).inbox
    config = {"bootstrap.servers": kafka_bootstrap}
    set_topic_config(config, inbox, max_message_bytes=str(max_bytes))
    admin = TopicAdmin(config)
    deadline = time.monotonic() + 10
    while admin.max_message_bytes(inbox) != max_bytes:
        assert time.monotonic() < deadline
        time.sleep(0.1)


async def test_a_result_over_the_inbox_max_message_bytes_is_reported_too_large(
    kafka_bootstrap: str, namespace: str
) -> None:
    """An inbox whose ``max.message.bytes`` an operator set to 50,000: the broker refused
    the 100 KB result's batch, the worker produced it again forever, its offset stayed
    open, and the workflow waited."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))
    _lower_inbox_limit(kafka_bootstrap, namespace, 50_000)
    task = ActivityTask("wf", "run", "T", 1, 1, "answers_at_length", "q", (), 0, 60_000, 0)
    _send_tasks(kafka_bootstrap, namespace, task)

    report = await _report_of(Member(kafka_bootstrap, namespace, "w-1"), answers_at_length)

    assert isinstance(report, ActivityFailedReport)
    assert (report.failure.type, report.failure.non_retryable) == ("RecordTooLarge", True)
    assert "the limit is 49,000" in report.failure.message


async def test_a_report_the_broker_refuses_as_too_large_is_sent_within_the_limit_read_anew(
    kafka_bootstrap: str, namespace: str
) -> None:
    """The inbox's ``max.message.bytes`` lowered after the worker read it: the broker
    refused the batch with ``MSG_SIZE_TOO_LARGE``, and the worker produced it again as it
    was, forever. Now the large outcome goes as ``RecordTooLarge``, and the small report
    produced beside it (in the same batch, within ``linger.ms``) goes as it was."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))
    worker = _worker(Member(kafka_bootstrap, namespace, "w-1"))
    names = TopicNames(namespace)
    _lower_inbox_limit(kafka_bootstrap, namespace, 50_000)
    small = ActivityCompletedReport("wf", "run", 1, 1, Payload("json/plain", b'"ok"'))
    large = ActivityCompletedReport("wf", "run", 2, 1, Payload("json/plain", b"x" * 100_000))
    delivered: list[int] = []

    try:
        worker._reports.send(small, on_delivered=lambda: delivered.append(small.seq))
        worker._reports.send(large, on_delivered=lambda: delivered.append(large.seq))
        await worker._reports.flush(20)
    finally:
        worker._poller.shutdown(wait=False)
        worker._executor.shutdown(wait=False)

    assert sorted(delivered) == [1, 2]
    records = await asyncio.to_thread(read_topic, kafka_bootstrap, names.inbox)
    reports = [serde.decode_inbox(record.value()) for record in records]
    assert small in reports  # as it was
    [refused] = [r for r in reports if r != small]
    assert isinstance(refused, ActivityFailedReport) and refused.seq == large.seq
    assert (refused.failure.type, refused.failure.non_retryable) == ("RecordTooLarge", True)
    assert "the limit is 49,000" in refused.failure.message


async def test_a_fatal_error_produce_raises_stops_the_worker(
    kafka_bootstrap: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fatal producer error raised by ``produce`` itself only failed that attempt's
    report, logged, and the worker ran on with a producer that could send nothing more.
    It now stops the worker as a fatal error in a delivery report does: raised out of the
    poll, and so out of `ActivityWorker.run`, the attempt's offset left open.

    A real fatal error (an idempotent producer's broken sequence) cannot be provoked at
    will, so it is injected at the seam the bookkeeping tests use for refusals
    (``produce_when_room``), as librdkafka's ``produce`` raises it for a producer in a
    fatal state: code ``_FATAL``. The consumer, the admin calls and the task are the
    real broker's."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))
    task = ActivityTask("wf", "run", "T", 1, 1, "answers_at_once", "q", (), 0, 60_000, 0)
    _send_tasks(kafka_bootstrap, namespace, task)
    member = Member(kafka_bootstrap, namespace, "w-1")
    attempts: list[str] = []

    def produce(_producer: Producer, topic: str, **_kwargs: Any) -> None:
        attempts.append(topic)
        raise KafkaException(KafkaError(KafkaError._FATAL))

    monkeypatch.setattr(activity_report_sender, "produce_when_room", produce)
    worker = _worker(member, answers_at_once)

    with pytest.raises(KafkaException) as raised:
        await asyncio.wait_for(worker.run(asyncio.Event()), 60)

    assert raised.value.args[0].code() == KafkaError._FATAL
    assert attempts == [TopicNames(namespace).inbox]  # the outcome's report, once
    assert _tasks_committed(member) == 0  # its offset open: the attempt runs again


async def test_a_stop_that_waits_for_kafka_to_take_a_report_is_not_taken_for_a_blocked_loop(
    kafka_bootstrap: str, namespace: str
) -> None:
    """The stop waited for undelivered reports in one `Producer.flush`, which held the loop
    for up to 10 s: the loop watch then logged an async activity running blocking code,
    with no activity running at all. Here the report cannot be delivered (the namespace
    has no inbox), so the stop waits out its whole flush."""
    ran.clear()
    _send_tasks(
        kafka_bootstrap,
        namespace,
        ActivityTask("wf", "run", "T", 1, 1, "answers_at_once", "q", (), 0, 60_000, 0),
    )
    worker = _worker(Member(kafka_bootstrap, namespace, "w-1"), answers_at_once)
    threshold_s = worker._config.blocked_loop_warning_s
    stop = asyncio.Event()

    with capture_logs() as logs:
        running = asyncio.create_task(worker.run(stop))
        assert await asyncio.to_thread(ran.wait, 30)
        stop.set()
        began = time.monotonic()
        await running
        stopped_in = time.monotonic() - began

    assert stopped_in > threshold_s  # the report was waited for
    assert not [e for e in logs if "event loop is blocked" in e["event"]]


async def test_the_running_gauge_counts_the_attempts_that_run_not_those_waiting_for_a_slot(
    kafka_bootstrap: str, namespace: str, holding: None
) -> None:
    """Tasks beyond ``max_concurrent`` wait in the worker's queue, which holds up to as
    many again: the gauge read them as running, so a saturated worker showed twice the
    activities it ran."""
    tasks = [
        ActivityTask("wf", "run", "T", seq, 1, "holds_its_thread", "q", (), 0, 60_000, 0)
        for seq in (1, 2)
    ]
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))  # an inbox
    _send_tasks(kafka_bootstrap, namespace, *tasks)
    registry = ActivityRegistry([holds_its_thread])
    prometheus = CollectorRegistry()
    worker = ActivityWorker(
        ActivityWorkerConfig(Member(kafka_bootstrap, namespace, "w-1"), "q", max_concurrent=1),
        registry,
        registry.converter,
        ActivityWorkerMetrics(prometheus),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + 30
        while len(worker._running) < len(tasks):  # both read: one runs, one waits
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.1)
        assert prometheus.get_sample_value("chronik_activities_running") == 1
    finally:
        released.set()  # the one running returns; the waiting one is left to the next owner
        stop.set()
        await running


async def test_the_abandoned_threads_gauge_counts_the_threads_that_run_on(
    kafka_bootstrap: str, namespace: str, holding: None
) -> None:
    """An abandoned sync attempt keeps its thread until the activity returns, which may be
    never: the log said so once, and nothing showed how many such threads a worker held."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))  # an inbox
    task = ActivityTask("wf", "run", "T", 1, 1, "holds_its_thread", "q", (), 0, 200, 0)
    _send_tasks(kafka_bootstrap, namespace, task)
    registry = ActivityRegistry([holds_its_thread])
    prometheus = CollectorRegistry()
    worker = ActivityWorker(
        ActivityWorkerConfig(Member(kafka_bootstrap, namespace, "w-1"), "q"),
        registry,
        registry.converter,
        ActivityWorkerMetrics(prometheus),
    )
    stop = asyncio.Event()

    def abandoned() -> float | None:
        return prometheus.get_sample_value("chronik_activity_threads_abandoned")

    with capture_logs() as logs:
        running = asyncio.create_task(worker.run(stop))
        try:
            assert abandoned() == 0
            await _until_abandoned(logs, running)
            assert abandoned() == 1
            released.set()  # the activity returns at last: its thread ends
            deadline = time.monotonic() + 10
            while abandoned() != 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running
