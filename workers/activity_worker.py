"""The activity worker: runs the tasks of one task queue and reports to the inbox.

The poll loop never waits for an activity: each task runs as its own asyncio task (sync
activities in a thread pool of their own, never the event loop's default pool, on which
the poll itself runs: sync activities filling that pool would stop polling and get the
worker dropped from its group), so polling — and with it the consumer's liveness towards
the group — continues however long an activity takes. At most ``max_concurrent`` tasks
run; the next ones wait their turn in a local queue, and only when as many wait are the
partitions paused (never the loop).

Offsets are committed per partition up to the lowest task still running
(`PartitionProgress`): a crash re-delivers exactly the tasks that had not finished, which
is what at-least-once with idempotency keys promises.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from runtime.converter import DataConverter
from runtime.engine import ActivityRegistry, run_activity
from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityHeartbeat,
    ActivityStartedReport,
    ActivityTask,
    CancelActivityTask,
    InboxMessage,
    attempt_key,
)
from runtime.payloads import Failure, Payload
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import MAX_RECORD_BYTES, Catalogue, TopicNames
from topics.consumed import Consumed, consume_available
from topics.errors import DecodeError
from topics.partitioner import producer_config
from topics.transient import produce_when_room
from workers.membership import Member, on_consume_error
from workers.offsets import PartitionProgress

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ActivityWorkerConfig:
    member: Member
    task_queue: str
    max_concurrent: int = 200
    #: Heartbeats without a heartbeat timeout are still sent (their details survive a
    #: retry), at most this often.
    heartbeat_interval_s: float = 10.0
    #: Where sync activities run; None: a pool of ``max_concurrent`` threads of the
    #: worker's own (shut down with it).
    executor: Executor | None = None
    #: On stop, how long running activities may finish before they are cancelled.
    drain_s: float = 30.0


@dataclass(slots=True)
class _Running:
    task: ActivityTask
    cancelled: asyncio.Event
    last_heartbeat: float = 0.0
    #: The newest details not sent yet, and the send scheduled for them.
    unsent: tuple[Payload, ...] | None = None
    trailing: asyncio.TimerHandle | None = None
    #: Further deliveries of this very attempt (a partition lost and regained while it
    #: ran): they finish with it instead of running it a second time alongside.
    redelivered: list[tuple[PartitionProgress, int]] = field(default_factory=list)
    #: When the activity last heartbeat (sent or held back), and the check that cancels
    #: the attempt once its heartbeat timeout passes without one.
    last_beat: float = 0.0
    watchdog: asyncio.TimerHandle | None = None


class _Queued(NamedTuple):
    """A task waiting for a slot."""

    running: _Running
    progress: PartitionProgress
    offset: int
    partition: int


class ActivityWorker:
    def __init__(
        self,
        config: ActivityWorkerConfig,
        registry: ActivityRegistry,
        converter: DataConverter,
    ) -> None:
        self._config = config
        self._registry = registry
        self._converter = converter
        member = config.member
        self._names = TopicNames(member.namespace)
        self._consumer = Consumer(
            member.group_config(self._names.activity_group(config.task_queue))
        )
        self._producer = Producer({**producer_config(member.client_config()), "linger.ms": 2})
        self._admin = TopicAdmin(member.client_config())
        self._progress: dict[int, PartitionProgress] = {}
        self._running: dict[tuple[str, str, int, int], _Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        #: Dispatched tasks waiting for one of the ``max_concurrent`` slots.
        self._queued: deque[_Queued] = deque()
        self._stopping = False
        #: The task partitions this worker holds. A batch consumed before a revocation may
        #: still hold records of a revoked partition: they are the new owner's to run, and
        #: committing their offsets would move the new owner's position back.
        self._assigned: set[int] = set()
        self._executor: Executor = config.executor or ThreadPoolExecutor(
            max_workers=config.max_concurrent, thread_name_prefix="chronik-activity"
        )

    async def run(self, stop: asyncio.Event) -> None:
        topic = self._names.tasks(self._config.task_queue)
        # Subscribing to a topic that does not exist yet would wait for nothing.
        await asyncio.to_thread(
            self._admin.ensure_task_queue,
            Catalogue(self._config.member.namespace),
            self._config.task_queue,
        )
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info(
            "activity worker started",
            worker_id=self._config.member.worker_id,
            namespace=self._config.member.namespace,
            task_queue=self._config.task_queue,
            activity_types=self._registry.names(),
        )
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consume_available, self._consumer, 500, 0.05)
                for record in records:
                    self._dispatch(record)
                self._apply_backpressure()
                self._commit()
                self._producer.poll(0)
        finally:
            await self._drain()

    async def _drain(self) -> None:
        """Let running activities finish and their reports arrive, then commit and close.

        Those still running after ``drain_s`` are cancelled (`activity.is_cancelled()`), and
        get a few seconds to stop; their offsets stay uncommitted, so they run again.
        """
        self._stopping = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._config.drain_s)
        if self._tasks:
            for running in self._running.values():
                running.cancelled.set()
            await asyncio.wait(self._tasks, timeout=5)
        self._producer.flush(10)  # runs the delivery callbacks that mark tasks finished
        self._commit()
        self._consumer.close()
        if self._config.executor is None:  # ours; the drain gave activities their time
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- tasks ------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        if (error := message.error()) is not None:
            on_consume_error(error, self._config.member.worker_id)
            return
        record = Consumed.of(message)
        if record.partition not in self._assigned:
            return
        try:
            decoded = record.decode(serde.decode_task)
        except DecodeError as error:
            log.error("undecodable task skipped", reason=str(error))
            return
        if isinstance(decoded, CancelActivityTask):
            running = self._running.get(attempt_key(decoded))
            if running is not None:
                running.cancelled.set()
            return
        progress = self._progress.setdefault(record.partition, PartitionProgress())
        progress.started(record.offset)
        key = attempt_key(decoded)
        if (running := self._running.get(key)) is not None:
            running.redelivered.append((progress, record.offset))
            return
        running = self._running[key] = _Running(decoded, asyncio.Event())
        self._queued.append(_Queued(running, progress, record.offset, record.partition))
        self._start_queued()

    def _start_queued(self) -> None:
        """Start queued tasks while fewer than ``max_concurrent`` run (oldest first)."""
        if self._stopping:  # queued tasks keep their offsets open: they run again
            return
        while self._queued and len(self._tasks) < self._config.max_concurrent:
            running, progress, offset, _ = self._queued.popleft()
            task = asyncio.create_task(self._execute(running, progress, offset))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start_queued()

    async def _execute(self, running: _Running, progress: PartitionProgress, offset: int) -> None:
        task = running.task
        reported = False
        try:
            if task.report_start:
                self._report(
                    ActivityStartedReport(
                        task.workflow_id,
                        task.run_id,
                        task.seq,
                        task.attempt,
                        self._config.member.worker_id,
                    )
                )
            report = await self._run_with_deadline(running)
            # The task's offset may be committed once its report is in Kafka, not before.
            self._report(report, on_delivered=lambda: _finish(progress, offset, running))
            reported = True
        except Exception:
            log.exception("activity execution crashed", activity=task.activity_type)
        finally:
            del self._running[attempt_key(task)]
            if running.trailing is not None:  # the outcome supersedes any heartbeat
                running.trailing.cancel()
            if not reported:
                _finish(progress, offset, running)

    async def _run_with_deadline(self, running: _Running) -> InboxMessage:
        """Run the attempt, cancelling it when the workflow would time it out.

        The engine times the attempt out by itself, and then sends a cancellation; these
        local deadlines only free the slot, and do so even when that cancellation waits
        behind tasks of partitions paused because every slot is taken.
        """
        task, loop = running.task, asyncio.get_running_loop()
        seconds = _seconds_to_deadline(task, time.time())
        deadline = None if seconds is None else loop.call_later(seconds, running.cancelled.set)
        running.last_beat = time.monotonic()
        if task.heartbeat_timeout_ms:
            self._watch_heartbeats(running)
        try:
            return await run_activity(
                self._registry,
                task,
                converter=self._converter,
                on_heartbeat=lambda details: self._heartbeat(running, details),
                cancelled=running.cancelled,
                executor=self._executor,
            )
        finally:
            for handle in (deadline, running.watchdog):
                if handle is not None:
                    handle.cancel()

    def _watch_heartbeats(self, running: _Running) -> None:
        """Cancel the attempt once a heartbeat timeout passed without a heartbeat."""
        quiet_for = time.monotonic() - running.last_beat
        left = running.task.heartbeat_timeout_ms / 1000 - quiet_for
        if left <= 0:
            running.cancelled.set()
            running.watchdog = None
        else:
            loop = asyncio.get_running_loop()
            running.watchdog = loop.call_later(left, self._watch_heartbeats, running)

    def _heartbeat(self, running: _Running, details: tuple[Payload, ...]) -> None:
        """Send at most one heartbeat per interval (0.8 of the heartbeat timeout), and the
        newest details at the end of an interval in which some were held back: dropping
        them once timed out an activity that heartbeat every 0.55 of its timeout."""
        task = running.task
        running.last_beat = time.monotonic()
        interval = (
            task.heartbeat_timeout_ms * 0.8 / 1000
            if task.heartbeat_timeout_ms
            else self._config.heartbeat_interval_s
        )
        running.unsent = details
        wait = running.last_heartbeat + interval - time.monotonic()
        if wait <= 0:
            self._send_heartbeat(running)
        elif running.trailing is None:
            loop = asyncio.get_running_loop()
            running.trailing = loop.call_later(wait, self._send_heartbeat, running)

    def _send_heartbeat(self, running: _Running) -> None:
        if running.trailing is not None:
            running.trailing.cancel()
            running.trailing = None
        details, running.unsent = running.unsent, None
        if details is None:
            return
        running.last_heartbeat = time.monotonic()
        task = running.task
        self._report(
            ActivityHeartbeat(task.workflow_id, task.run_id, task.seq, task.attempt, details)
        )

    def _report(
        self, message: InboxMessage, on_delivered: Callable[[], None] | None = None
    ) -> None:
        """Produce ``message``; ``on_delivered`` runs (in the loop's poll) once Kafka has it.

        A report Kafka did not take (librdkafka gave up after ``message.timeout.ms``) is
        produced again, and its task's offset stays uncommitted until one copy is in:
        counting it as delivered lost the result for good, the workflow then waiting for a
        start-to-close retry — or, with only a schedule-to-close timeout, timing out an
        activity that had completed. The engine ignores a second copy of a report.
        """
        value = encode_report(message)
        if value is None:
            log.warning("heartbeat too large to send: dropped", workflow_id=message.workflow_id)
            return

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                if on_delivered is not None:
                    on_delivered()
                return
            report = type(message).__name__
            if error.fatal():  # the producer is unusable: stop; the task's offset stays open
                raise KafkaException(error)
            log.warning("report not delivered: producing it again", error=str(error), report=report)
            self._report(message, on_delivered)

        produce_when_room(
            self._producer,
            self._names.inbox,
            key=message.workflow_id.encode(),
            value=value,
            on_delivery=delivered,
        )

    # --- flow control and offsets ------------------------------------------------------

    def _apply_backpressure(self) -> None:
        """Pause the partitions while ``max_concurrent`` tasks wait their turn.

        Tasks beyond ``max_concurrent`` wait in a local queue rather than behind paused
        partitions: pausing drops what librdkafka fetched, and pausing as soon as the
        running tasks reached the limit cut in-process W2 from 171 to 73 workflows/s. The
        queue bounds what a worker holds to twice ``max_concurrent`` (plus one batch).
        """
        busy = len(self._queued) >= self._config.max_concurrent
        if busy == self._paused:
            return
        assignment = self._consumer.assignment()
        if busy:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
        self._paused = busy

    def _commit(self) -> None:
        topic = self._names.tasks(self._config.task_queue)
        offsets = [
            TopicPartition(topic, number, point)
            for number, progress in self._progress.items()
            if (point := progress.commit_point()) is not None
        ]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as error:
            log.warning("offset commit failed", error=str(error))

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in assigned)
        if self._paused:
            consumer.pause(assigned)
        # As the workflow worker logs its own: which task partitions this worker holds.
        log.info(
            "task partitions assigned",
            task_queue=self._config.task_queue,
            partitions=sorted(tp.partition for tp in assigned),
        )

    def _on_revoke(self, _consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._commit()
        gone = {tp.partition for tp in revoked}
        log.info("task partitions released", partitions=sorted(gone))
        for number in gone:
            self._assigned.discard(number)
            self._progress.pop(number, None)
        kept: deque[_Queued] = deque()
        for queued in self._queued:  # not started: the new owner runs them
            if queued.partition in gone:
                self._running.pop(attempt_key(queued.running.task), None)
            else:
                kept.append(queued)
        self._queued = kept


def _seconds_to_deadline(task: ActivityTask, now_s: float) -> float | None:
    """Seconds from now to the first of start-to-close (the attempt starts now) and the
    schedule-to-close deadline; None without either."""
    candidates = []
    if task.start_to_close_timeout_ms:
        candidates.append(task.start_to_close_timeout_ms / 1000)
    if task.close_deadline_ms:
        candidates.append(max(0.0, task.close_deadline_ms / 1000 - now_s))
    return min(candidates) if candidates else None


def _finish(progress: PartitionProgress, offset: int, running: _Running) -> None:
    """The attempt is done: its offset, and those of its redeliveries, may be committed."""
    progress.finished(offset)
    for other, redelivered_at in running.redelivered:
        other.finished(redelivered_at)


def encode_report(message: InboxMessage, limit: int = MAX_RECORD_BYTES) -> bytes | None:
    """The report's inbox record, within what Kafka takes.

    A result or failure too large to send becomes a non-retryable failure that says so —
    retrying would produce it again — and a heartbeat too large is dropped (None).
    """
    value = serde.encode_inbox(message)
    if len(message.workflow_id.encode()) + len(value) <= limit:
        return value
    if not isinstance(message, ActivityCompletedReport | ActivityFailedReport):
        return None
    what = "result" if isinstance(message, ActivityCompletedReport) else "failure"
    failure = Failure(
        f"the activity's {what} is {len(value):,} bytes encoded; the limit is {limit:,}",
        type="RecordTooLarge",
        non_retryable=True,
    )
    too_large = ActivityFailedReport(
        message.workflow_id, message.run_id, message.seq, message.attempt, failure
    )
    return serde.encode_inbox(too_large)
