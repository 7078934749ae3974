"""Every transaction that fires timers carries an offset for every owned partition.

librdkafka has no position for a partition nothing was consumed from since it was
assigned, and sends no offsets for a transaction with none: a step that only fired timers
then went unfenced, and a worker dropped from the group (say, while it restored) fired
them alongside the new owner. That holds for the workflow worker's inbox offsets and for
the standalone timer service's positions on the timers topic alike. And a worker whose
transactions another process with its id fenced says so, as one whose consumer was fenced.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runtime.engine import WorkflowRegistry
from runtime.messages import DurableTimer, TimerFiredReport
from runtime.store import StoreBatch
from tests.integration.kafka_reading import read_topic
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from workers import partition as partition_module
from workers import workflow_worker
from workers.membership import SESSION_TIMEOUT_MS, Member, WorkerFencedError
from workers.timer_service import TimerService, TimerServiceConfig
from workers.workflow_worker import WorkflowWorker, WorkflowWorkerConfig

pytestmark = pytest.mark.kafka


def _owner_of_both_partitions(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> WorkflowWorker:
    """A workflow worker of its own id, stepped until it owns (has restored) both
    partitions; the caller closes it."""
    member = Member(kafka_bootstrap, namespace, f"w-{uuid.uuid4().hex[:6]}")
    worker = WorkflowWorker(
        WorkflowWorkerConfig(member=member, state_dir=tmp_path), WorkflowRegistry([])
    )
    worker._producer.init_transactions(60)
    worker._consumer.subscribe(
        [TopicNames(namespace).inbox], on_assign=worker._on_assign, on_revoke=worker._on_revoke
    )
    deadline = time.monotonic() + 30
    try:
        while sorted(worker._partitions) != [0, 1] and time.monotonic() < deadline:
            worker._step()
    except BaseException:
        worker._close()
        raise
    return worker


def test_a_worker_whose_producer_another_process_fenced_stops_saying_so(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process started with the same ``--worker-id`` fences the first twice: its
    consumer (static membership) and its producer (the transactional id). Whichever the
    first worker hears of first stops it. The consumer's error said which worker and why;
    the producer's was librdkafka's bare ``_FENCED: Failed to add offsets to transaction``,
    and `run` did not even raise that: closing, it flushed the fatal producer, whose
    flush raised (a `SystemError` out of a purged record's delivery report) over it, so
    ``chronik worker`` ended in a traceback. The twin test failed so whenever the second
    process's ``init_transactions`` came before its consumer joined."""
    monkeypatch.setattr(workflow_worker, "FRESH_AS_OF_EVERY_MS", 300)  # transactions come
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    member = Member(kafka_bootstrap, namespace, f"w-{uuid.uuid4().hex[:6]}")
    worker = WorkflowWorker(
        WorkflowWorkerConfig(member=member, state_dir=tmp_path), WorkflowRegistry([])
    )
    ended: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(threading.Event())
        except BaseException as error:  # what `run` raised is the subject
            ended.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while sorted(worker._partitions) != [0, 1]:
        assert time.monotonic() < deadline and thread.is_alive(), "never owned its partitions"
        time.sleep(0.1)
    twin = Producer(member.transactional_producer_config("workflow-worker"))
    twin.init_transactions(60)  # what the second process does first: a newer epoch
    thread.join(60)

    assert not thread.is_alive(), "the fenced worker did not stop"
    [error] = ended
    assert isinstance(error, WorkerFencedError), repr(error)
    assert str(error).startswith(f"worker {member.worker_id!r} was fenced: ")
    assert str(error).endswith("(is another process running with the same --worker-id?)")


def _commit_start(kafka_bootstrap: str, group: str, topic: str) -> None:
    """Offset 0 of partitions 0 and 1 committed for ``group``, as a previous owner left it."""
    other = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    other.commit(offsets=[TopicPartition(topic, p, 0) for p in (0, 1)], asynchronous=False)
    other.close()


@pytest.mark.parametrize("committed_before", [False, True], ids=["fresh", "committed"])
def test_a_partition_nothing_was_consumed_from_still_commits_its_offset(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, committed_before: bool
) -> None:
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    names = TopicNames(namespace)
    if committed_before:  # a worker owned the partitions before
        _commit_start(kafka_bootstrap, names.workflow_group, names.inbox)
    worker = _owner_of_both_partitions(kafka_bootstrap, namespace, tmp_path)
    try:
        positions = worker._inbox_positions({})
        assert [(tp.partition, tp.offset) for tp in positions] == [(0, 0), (1, 0)]
    finally:
        worker._close()


def test_an_idle_owner_keeps_its_stores_fresh(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store is fresh as of its owner's last committed transaction, and an owner with
    no message to process committed none: after a quiet day (a weekend) every store was
    older than the tombstones' retention, and a restart rebuilt each from offset 0. An
    idle owner commits its fence offsets alone every `FRESH_AS_OF_EVERY_MS`."""
    monkeypatch.setattr(partition_module, "FRESH_AS_OF_EVERY_MS", 300)
    monkeypatch.setattr(workflow_worker, "FRESH_AS_OF_EVERY_MS", 300)
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    worker = _owner_of_both_partitions(kafka_bootstrap, namespace, tmp_path)
    try:
        restored = {n: p.store.fresh_as_of() for n, p in worker._partitions.items()}
        quiet_until = time.monotonic() + 1.5
        while time.monotonic() < quiet_until:
            worker._step()
        now = time.time_ns() // 1_000_000
        for number, p in worker._partitions.items():
            fresh = p.store.fresh_as_of()
            assert fresh is not None and fresh > (restored[number] or 0)
            assert now - fresh < 1_000  # at most the interval and a commit behind
    finally:
        worker._close()


@pytest.mark.parametrize("committed_before", [False, True], ids=["fresh", "committed"])
def test_a_timer_service_partition_nothing_was_consumed_from_still_commits_its_offset(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, committed_before: bool
) -> None:
    """The timer service fires a due timer in a transaction with its positions on the
    timers topic, which is what fences a zombie; it sent only the partitions librdkafka
    had a position for, so an idle partition's fire (a timer set long ago, restored from
    the store and due now) went in a transaction with no offsets, fencing nothing."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    names = TopicNames(namespace)
    if committed_before:
        _commit_start(kafka_bootstrap, names.timer_group, names.timers)
    member = Member(kafka_bootstrap, namespace, f"t-{uuid.uuid4().hex[:6]}")
    service = TimerService(TimerServiceConfig(member, tmp_path))
    service._producer.init_transactions(60)
    service._consumer.subscribe([names.timers], on_assign=service._on_assign)
    try:
        deadline = time.monotonic() + 30
        while sorted(service._stores) != [0, 1] and time.monotonic() < deadline:
            service._step()
        positions = service._positions()
        assert [(tp.partition, tp.offset) for tp in positions] == [(0, 0), (1, 0)]
    finally:
        service._consumer.close()
        service._release(list(service._stores), "test over")


def _timer_service(member: Member, state_dir: Path) -> TimerService:
    """A timer service subscribed as `TimerService.run` subscribes it; the caller steps it."""
    service = TimerService(TimerServiceConfig(member, state_dir))
    service._producer.init_transactions(60)
    service._consumer.subscribe(
        [TopicNames(member.namespace).timers],
        on_assign=service._on_assign,
        on_revoke=lambda _c, tps: service._release([tp.partition for tp in tps], "revoked"),
        on_lost=lambda _c, tps: service._release([tp.partition for tp in tps], "lost"),
    )
    return service


def _step_until_owned(service: TimerService, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while 0 not in service._stores:
        assert time.monotonic() < deadline, "the timer service never owned partition 0"
        service._step()


def test_a_timer_service_dropped_from_its_group_fires_nothing(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """A zombie: a timer service that stopped polling (a long restore, a pause) for longer
    than ``max.poll.interval.ms``, so the group gave its partition to another, and that
    has not polled since, so it does not know. A timer in its index comes due (one it
    restored before it was dropped; the new owner fires its own copy). Its transaction
    carried no offset for the idle partition, so nothing fenced it: the fire went to the
    inbox alongside the new owner's. With the partition's offset in it, the broker
    refuses the transaction (unknown member), and it is aborted."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 1))
    names = TopicNames(namespace)
    # The shortest poll interval librdkafka allows (the session timeout), for every one
    # of the zombie's consumers: its restore's too.
    impatient = {
        "max.poll.interval.ms": SESSION_TIMEOUT_MS,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
    }
    zombie = _timer_service(Member(kafka_bootstrap, namespace, "zombie", impatient), tmp_path / "z")
    successor = _timer_service(Member(kafka_bootstrap, namespace, "successor"), tmp_path / "s")
    try:
        _step_until_owned(zombie, 30)
        _step_until_owned(successor, 60 + SESSION_TIMEOUT_MS / 1000)  # the zombie is dropped
        due = DurableTimer("wf", "run", "sleep:1", 1)
        restored = StoreBatch()
        restored.put_timer(due.workflow_id, due.timer_id, due.fire_at_ms, serde.encode_timer(due))
        zombie._stores[0].write(restored)

        zombie._fire_due(consumed=False)  # the rest of a step that began before it was dropped

        inbox = [serde.decode_inbox(r.value()) for r in read_topic(kafka_bootstrap, names.inbox)]
        assert [m for m in inbox if isinstance(m, TimerFiredReport)] == []
        assert zombie._stores[0].due_timers(2**62) != []  # not applied: it was not committed
    finally:
        for service in (zombie, successor):
            service._consumer.close()
            service._release(list(service._stores), "test over")
