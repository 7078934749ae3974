"""The activity worker: runs the tasks of one task queue and reports to the inbox.

The poll loop never waits for an activity: each task runs as its own asyncio task (sync
activities in a thread pool of their own), and the poll runs in a thread of its own too —
never in the event loop's default pool, which activities share (sync ones once ran there;
async ones call `asyncio.to_thread`): activities filling that pool stopped the polling,
and with it every further task and cancellation. So polling — and with it the consumer's
liveness towards the group — continues however long an activity takes. At most
``max_concurrent`` tasks run; the next ones wait their turn in a local queue, and only
when as many wait are the partitions paused (never the loop).

Offsets are committed per partition up to the lowest task still running
(`PartitionProgress`): a crash re-delivers exactly the tasks that had not finished, which
is what at-least-once with idempotency keys promises.

The worker's state (running and queued tasks, offsets, assignment) belongs to the event
loop's thread. librdkafka calls the rebalance callbacks in the thread that polls (the
poller), so they hand their work to the loop and wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from runtime.converter import DataConverter
from runtime.daemon_pool import DaemonThreadPool
from runtime.engine import ActivityRegistry, run_activity
from runtime.engine.activities import timeout_failure
from runtime.engine.activity_executor import CANCEL_GRACE_S
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
from runtime.worker_spec import DEFAULT_GRACEFUL_SHUTDOWN
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import MAX_RECORD_BYTES, Catalogue, TopicNames
from topics.consumed import Consumed, consume_available
from topics.errors import DecodeError, EncodeError, KafkaUnavailableError
from topics.partitioner import producer_config
from topics.transient import is_fatal, is_transient, produce_when_room
from workers.loop_watch import LoopWatch
from workers.membership import Member, on_consume_error
from workers.metrics import ActivityWorkerMetrics
from workers.offsets import PartitionProgress

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

#: How an attempt ends, and every report the worker sends.
Outcome = ActivityCompletedReport | ActivityFailedReport
_Report = Outcome | ActivityHeartbeat | ActivityStartedReport

#: While a stop waits for running activities, the consumer is polled this often (seconds):
#: far within ``max.poll.interval.ms``, past which it left its group mid-stop.
_DRAIN_POLL_S = 1.0
#: How long a stop waits for the reports of finished activities to reach Kafka.
_FLUSH_S = 10.0
#: How long a report the producer refuses for a passing reason (a topic's metadata not
#: there yet, a partition's leader moving) is offered again before the worker gives up
#: on it, and the longest pause between two offers (seconds).
REPORT_RETRY_S = 30.0
_REPORT_RETRY_PAUSE_S = 1.0
#: librdkafka's ``message.max.bytes`` and ``batch.size`` when none is set, and what
#: `MAX_RECORD_BYTES` leaves below it for a batch's framing.
_MESSAGE_MAX_BYTES = 1_000_000
_BATCH_BYTES = 1_000_000
_FRAMING_BYTES = _MESSAGE_MAX_BYTES - MAX_RECORD_BYTES


class CancelReason(StrEnum):
    """Why an attempt was cancelled, which decides what the worker reports for it."""

    #: The workflow asked (`CancelActivityTask`): "cancelled" (the engine closed the
    #: activity already, and ignores it).
    REQUESTED = "requested"
    #: The worker stops: nothing, and the offset stays open, so the same attempt runs
    #: again on the partition's next owner.
    STOPPING = "stopping"
    #: A deadline the engine also keeps: the timeout the engine would record.
    START_TO_CLOSE = "start_to_close"
    SCHEDULE_TO_CLOSE = "schedule_to_close"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class ActivityWorkerConfig:
    member: Member
    task_queue: str
    max_concurrent: int = 200
    #: Heartbeats without a heartbeat timeout are still sent (their details survive a
    #: retry), at most this often.
    heartbeat_interval_s: float = 10.0
    #: Where sync activities run; None: a pool of ``max_concurrent`` daemon threads of
    #: the worker's own (shut down with it), which an abandoned activity cannot keep from
    #: exiting.
    executor: Executor | None = None
    #: On stop, how long running activities may finish before they are cancelled
    #: (Temporal's ``graceful_shutdown_timeout``); those that do not stop within
    #: `CANCEL_GRACE_S` of their cancellation are then abandoned.
    graceful_shutdown_s: float = DEFAULT_GRACEFUL_SHUTDOWN.total_seconds()
    #: How long the event loop may stand still before the log says which code blocks it
    #: (`workers.loop_watch`): a healthy loop ticks within milliseconds.
    blocked_loop_warning_s: float = 2.0


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
    #: Why the attempt was cancelled: the first reason counts.
    cancel_reason: CancelReason | None = None
    #: The attempt ended with the activity still running: it ignored its cancellation.
    abandoned: bool = False

    def cancel(self, reason: CancelReason) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancelled.set()

    def abandon(self) -> None:
        self.abandoned = True


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
        metrics: ActivityWorkerMetrics | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._converter = converter
        self._metrics = metrics or ActivityWorkerMetrics(CollectorRegistry())
        member = config.member
        self._names = TopicNames(member.namespace)
        self._consumer = Consumer(
            {
                **member.group_config(self._names.activity_group(config.task_queue)),
                "on_commit": self._on_commit,
            }
        )
        self._producer = _report_producer(member.client_config())
        self._report_limit = report_limit(member.client_config())
        #: The read of the inbox's ``max.message.bytes`` under way after a refusal, which
        #: every report of the refused batch waits for.
        self._rereading: asyncio.Future[int] | None = None
        #: Reports waiting for that read, to be produced again.
        self._resending: set[asyncio.Task[None]] = set()
        #: The fatal error ``produce`` raised, which stops the worker at the next poll.
        self._producer_failed: KafkaException | None = None
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
        self._executor: Executor = config.executor or DaemonThreadPool(
            max_workers=config.max_concurrent, thread_name_prefix="chronik-activity"
        )
        # Started attempts: `_running` also holds those waiting for a slot.
        self._metrics.watch(running=lambda: len(self._tasks), abandoned=self._abandoned_threads)
        #: The loop that owns the state above (set by `run`).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The one thread that polls the consumer (and so runs its rebalance callbacks).
        self._poller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chronik-poll")

    async def run(self, stop: asyncio.Event) -> None:
        loop = self._loop = asyncio.get_running_loop()
        topic = self._names.tasks(self._config.task_queue)
        # Subscribing to a topic that does not exist yet would wait for nothing.
        await loop.run_in_executor(
            self._poller,
            self._admin.ensure_task_queue,
            Catalogue(self._config.member.namespace),
            self._config.task_queue,
        )
        await loop.run_in_executor(self._poller, self._follow_inbox_limit)
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
        watch = LoopWatch(
            loop,
            threshold_s=self._config.blocked_loop_warning_s,
            running=self._running_types,
            what="activity worker's",
        )
        watch.start()
        try:
            while not stop.is_set():
                await self._poll(0.05)
                self._apply_backpressure()
        finally:
            try:
                await self._drain()
            finally:
                watch.stop()

    def _follow_inbox_limit(self) -> None:
        """Keep reports and their batches within the inbox's ``max.message.bytes``, before
        anything is produced (in the polling thread: the admin call blocks).

        An operator may set that topic config below librdkafka's ``message.max.bytes``:
        the broker then refused a large report's whole batch, the worker produced it
        again forever, and the workflow waited. Within the limit, an outcome too large
        goes as `RecordTooLarge` (`encode_report`); the producer is made anew with its
        ``batch.size`` within it too, so that small reports batched together are not
        refused either."""
        topic_max = self._inbox_max_bytes()
        if topic_max is None:
            return
        settings = self._config.member.client_config()
        self._report_limit = report_limit(settings, topic_max)
        if topic_max - _FRAMING_BYTES < _batch_bytes(settings):
            self._producer = _report_producer(settings, topic_max)

    def _inbox_max_bytes(self) -> int | None:
        """The inbox's ``max.message.bytes``, asked with the admin's timeout like the task
        queue's check before it; None when Kafka does not say (logged): the producer's
        own settings then bound the reports, and a refusal re-reads it (`_resend_refused`)."""
        try:
            topic_max = self._admin.max_message_bytes(self._names.inbox)
        except KafkaUnavailableError as error:
            log.warning(
                "the inbox's max.message.bytes could not be read: reports are limited by "
                "the producer's settings",
                error=str(error), limit=self._report_limit,
            )  # fmt: skip
            return None
        return topic_max

    def _read_report_limit(self) -> int:
        """The report limit, after reading the inbox's ``max.message.bytes`` again (in the
        polling thread); it only goes down: the producer's batches were sized for it."""
        topic_max = self._inbox_max_bytes()
        if topic_max is not None:
            settings = self._config.member.client_config()
            self._report_limit = min(self._report_limit, report_limit(settings, topic_max))
        return self._report_limit

    def _abandoned_threads(self) -> int:
        """Threads of abandoned attempts still running, for the gauge: only a
        `DaemonThreadPool` can tell (an application's executor counts them as its own)."""
        if isinstance(self._executor, DaemonThreadPool):
            return self._executor.abandoned_running()
        return 0

    def _running_types(self) -> list[str]:
        """The activity types in flight; read from the watch's thread while the loop stands."""
        return sorted({running.task.activity_type for running in list(self._running.values())})

    async def _drain(self) -> None:
        """Let running activities finish and their reports arrive, then commit and close.

        Those still running after ``graceful_shutdown_s`` are cancelled
        (`activity.is_cancelled()`), and get `CANCEL_GRACE_S` to stop; their offsets stay
        uncommitted, so they run again. One that ignores its cancellation is abandoned
        (logged, nothing reported): waiting for it kept the worker from ever stopping.
        The consumer is polled throughout (`_wait_polling`), with its partitions paused.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        # In the polling thread, after a poll still under way (see the close below).
        await loop.run_in_executor(self._poller, self._pause_all)
        await self._wait_polling(self._config.graceful_shutdown_s)
        if self._tasks:
            for running in self._running.values():
                running.cancel(CancelReason.STOPPING)
            await self._wait_polling(CANCEL_GRACE_S + 1)
        await self._flush(_FLUSH_S)  # runs the delivery callbacks that mark tasks finished
        self._commit()
        # In the polling thread, after the poll under way: a cancelled `run` (what
        # `asyncio.run` does to tasks left when its main returns) gets here mid-poll, and a
        # close in the loop's thread then ran at once with that poll, whose rebalance
        # callback waited for this very loop, blocked in the close. From the polling
        # thread the close's own revoke callback hands its work to the loop, free here.
        await asyncio.get_running_loop().run_in_executor(self._poller, self._consumer.close)
        self._poller.shutdown(wait=False)
        if self._config.executor is None:  # ours; the drain gave activities their time
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _pause_all(self) -> None:
        """Fetch no more tasks (a stop starts none), also of partitions assigned from now."""
        self._paused = True
        self._consumer.pause(self._consumer.assignment())

    async def _wait_polling(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the running attempts, polling all the while.

        A graceful shutdown may last longer than ``max.poll.interval.ms`` (Temporal's is
        often set to hours): waiting without a poll, the consumer left its group past it,
        the commit of every attempt that finished afterwards was refused, and the new
        owner ran those again. Polls also run the delivery callbacks and commits, so what
        finished is committed before the end of the wait, and a cancellation read still
        reaches its attempt; the partitions are paused (`_pause_all`), and a task read
        now waits in the queue, its offset open, for the next owner.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(self._tasks, timeout=min(left, _DRAIN_POLL_S))
            await self._poll(0)

    async def _poll(self, timeout_s: float) -> None:
        """One poll, in the polling thread: dispatch what came, run the reports' delivery
        callbacks, commit what finished."""
        records = await asyncio.get_running_loop().run_in_executor(
            self._poller, consume_available, self._consumer, 500, timeout_s
        )
        for record in records:
            self._dispatch(record)
        self._producer.poll(0)
        if (failed := self._producer_failed) is not None:  # raised once, as a delivery's is
            self._producer_failed = None
            raise failed
        self._commit()

    async def _flush(self, timeout_s: float) -> None:
        """`Producer.flush` in slices: one call blocked the loop for as long as Kafka took,
        and the loop watch blamed the activities for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            # Nothing left to deliver, nor waiting to be produced again (`_resend_refused`).
            if not self._producer.flush(0.05) and not self._resending:
                return
            await asyncio.sleep(0)  # the loop runs between slices

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
                running.cancel(CancelReason.REQUESTED)
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
        """Run the attempt and report its outcome; the offset is finished only once Kafka
        has the report. Finishing it whenever the report could not be produced (an
        unencodable failure, a refusal of the producer) committed the attempt as done with
        its outcome lost, and the workflow waited for its activity's timeout."""
        task = running.task
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
            began = time.monotonic()
            report = outcome(await self._run_with_deadline(running), running.cancel_reason)
            self._metrics.finished(
                task.activity_type, outcome_label(report), time.monotonic() - began
            )
            if running.abandoned:
                _log_abandoned(running, reported=report is not None)
            if report is None:  # stopped: its offset stays open, it runs again elsewhere
                return
            # The task's offset may be committed once its report is in Kafka, not before.
            self._report(report, on_delivered=lambda: _finish(progress, offset, running))
        except Exception:
            log.exception(
                "activity execution crashed: its task's offset stays uncommitted, and the "
                "attempt runs again on the partition's next owner",
                activity=task.activity_type, workflow_id=task.workflow_id, seq=task.seq,
                attempt=task.attempt,
            )  # fmt: skip
        finally:
            del self._running[attempt_key(task)]
            if running.trailing is not None:  # the outcome supersedes any heartbeat
                running.trailing.cancel()

    async def _run_with_deadline(self, running: _Running) -> Outcome:
        """Run the attempt, cancelling it when the workflow would time it out.

        The engine times the attempt out by itself, and then sends a cancellation; these
        local deadlines only free the slot, and do so even when that cancellation waits
        behind tasks of partitions paused because every slot is taken.
        """
        task, loop = running.task, asyncio.get_running_loop()
        first = _first_deadline(task, time.time())
        deadline = None if first is None else loop.call_later(first[0], running.cancel, first[1])
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
                on_abandoned=running.abandon,
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
            running.cancel(CancelReason.HEARTBEAT)
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

    def _report(self, message: _Report, on_delivered: Callable[[], None] | None = None) -> None:
        """Produce ``message``; ``on_delivered`` runs (in the loop's poll) once Kafka has it.

        The record is encoded within what the producer takes (`encode_report`): an outcome
        that cannot be sent as it is goes as a failure that says why. What the producer
        refuses is handled by `_produce`.
        """
        value = encode_report(message, self._report_limit)
        self._produce(message, value, on_delivered, time.monotonic() + REPORT_RETRY_S, 0.05)

    def _produce(
        self,
        message: _Report,
        value: bytes,
        on_delivered: Callable[[], None] | None,
        deadline: float,
        pause_s: float,
    ) -> None:
        """Produce ``value``, offered again while the producer refuses it for a passing
        reason, until ``deadline``; given up on then, or at once for any other reason,
        and logged: ``on_delivered`` never runs, so its task's offset stays uncommitted.

        A report Kafka did not take (librdkafka gave up after ``message.timeout.ms``) is
        produced again, its offset uncommitted until one copy is in: counting it as
        delivered lost the result for good, the workflow then waiting for a start-to-close
        retry — or, with only a schedule-to-close timeout, timing out an activity that had
        completed. The engine ignores a second copy of a report. A fatal producer error
        stops the worker (raised out of the poll), its offset open — one ``produce`` raised
        too (kept for `_poll` to raise): it only failed that attempt, and the worker ran on
        with a producer that could send nothing more.
        """

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                if on_delivered is not None:
                    on_delivered()
                return
            if is_fatal(error):  # the producer is unusable: stop; the task's offset stays open
                raise KafkaException(error)
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                self._refused_too_large(message, value, on_delivered)
                return
            log.warning(
                "report not delivered: producing it again",
                error=str(error), report=type(message).__name__,
            )  # fmt: skip
            self._produce(message, value, on_delivered, time.monotonic() + REPORT_RETRY_S, 0.05)

        try:
            produce_when_room(
                self._producer,
                self._names.inbox,
                key=message.workflow_id.encode(),
                value=value,
                on_delivery=delivered,
            )
        except KafkaException as refused:
            error: KafkaError = refused.args[0]
            if is_fatal(error) or not is_transient(error) or time.monotonic() >= deadline:
                _log_not_produced(message, error)
                if is_fatal(error):
                    self._producer_failed = refused
                return
            loop = asyncio.get_running_loop()  # offered again without blocking the loop
            again = min(pause_s * 2, _REPORT_RETRY_PAUSE_S)
            loop.call_later(pause_s, self._produce, message, value, on_delivered, deadline, again)

    def _refused_too_large(
        self, message: _Report, value: bytes, on_delivered: Callable[[], None] | None
    ) -> None:
        """The broker refused the batch holding ``message`` as larger than the inbox's
        ``max.message.bytes`` (lowered since the worker read it, or not read): produced
        again as it was, it was refused again forever. It is produced again once the
        limit is read anew (`_resend_refused`), off the loop."""
        log.warning(
            "report refused by the broker as too large: the inbox's max.message.bytes is "
            "read again",
            report=type(message).__name__, workflow_id=message.workflow_id, seq=message.seq,
            attempt=message.attempt, size=len(value), limit=self._report_limit,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(
            self._resend_refused(message, value, on_delivered)
        )
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _resend_refused(
        self, message: _Report, value: bytes, on_delivered: Callable[[], None] | None
    ) -> None:
        """Produce a refused report again under the limit read anew: one over it is
        encoded again within it (an outcome as `RecordTooLarge`, a heartbeat without its
        details); one within it only shared the refused batch, and goes as it was."""
        limit = await self._reread_limit()
        if len(message.workflow_id.encode()) + len(value) > limit:
            value = encode_report(message, limit)
        self._produce(message, value, on_delivered, time.monotonic() + REPORT_RETRY_S, 0.05)

    async def _reread_limit(self) -> int:
        """`_read_report_limit`, in the polling thread; one read for all the reports of a
        refused batch, which are refused together."""
        if self._rereading is None:
            loop = asyncio.get_running_loop()
            reading = asyncio.ensure_future(
                loop.run_in_executor(self._poller, self._read_report_limit)
            )
            self._rereading = reading
            reading.add_done_callback(self._reread_done)
        return await asyncio.shield(self._rereading)

    def _reread_done(self, _reading: asyncio.Future[int]) -> None:
        self._rereading = None

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
        _commit(self._consumer, self._offsets())

    def _on_commit(self, error: KafkaError | None, offsets: list[TopicPartition]) -> None:
        """librdkafka's answer to a commit (in the polling thread): a refused one (a
        rebalance under way, a coordinator moving) is offered again by the next commit.
        Left as it was, an idle partition kept its old offset, and a restart ran its
        finished tasks again."""
        failed = [(tp.partition, tp.offset) for tp in offsets if error or tp.error]
        if not failed or self._loop is None:
            return
        log.warning("offset commit failed; it is retried", error=str(error), offsets=failed)
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is gone
            self._loop.call_soon_threadsafe(self._retry_commits, failed)

    def _retry_commits(self, failed: list[tuple[int, int]]) -> None:
        for partition, offset in failed:
            if (progress := self._progress.get(partition)) is not None:
                progress.commit_failed(offset)

    def _offsets(self) -> list[TopicPartition]:
        """The commit point of every partition that moved since it was last committed."""
        topic = self._names.tasks(self._config.task_queue)
        return [
            TopicPartition(topic, number, point)
            for number, progress in self._progress.items()
            if (point := progress.commit_point()) is not None
        ]

    # --- rebalance callbacks: in the polling thread; the state they change, in the loop --

    def _in_loop(self, call: Callable[..., _T], *args: object) -> _T:
        """``call(*args)`` in the loop's thread, waited for: the rebalance callbacks must
        have applied their change before librdkafka moves the partitions on.

        Called in the loop's thread itself, it just calls."""
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop:
            return call(*args)
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(call(*args))
            except BaseException as error:  # raised in the polling thread, like before
                done.set_exception(error)

        loop.call_soon_threadsafe(run)
        return done.result()

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        if self._in_loop(self._assign, assigned):
            # Pausing a partition librdkafka has not assigned yet does nothing (it assigns
            # after this callback unless the callback did): the records of partitions given
            # to a busy worker flowed in, unbounded. The group is cooperative
            # (`Member.group_config`), so the assignment is incremental.
            consumer.incremental_assign(assigned)
            consumer.pause(assigned)
        # As the workflow worker logs its own: which task partitions this worker holds.
        log.info(
            "task partitions assigned",
            task_queue=self._config.task_queue,
            partitions=sorted(tp.partition for tp in assigned),
        )

    def _assign(self, assigned: list[TopicPartition]) -> bool:
        """Take the partitions; whether they start paused (the local queue is full)."""
        self._assigned.update(tp.partition for tp in assigned)
        return self._paused

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        _commit(consumer, self._in_loop(self._release, revoked))

    def _release(self, revoked: list[TopicPartition]) -> list[TopicPartition]:
        """Let ``revoked`` go; the offsets to commit before they do."""
        offsets = self._offsets()
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
        return offsets


def _commit(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    if not offsets:
        return
    try:
        consumer.commit(offsets=offsets, asynchronous=True)
    except KafkaException as error:
        log.warning("offset commit failed", error=str(error))


def outcome(report: Outcome, reason: CancelReason | None) -> Outcome | None:
    """What to report for an attempt that ended as ``report``; None: nothing, yet.

    An attempt the worker cancelled ends as "cancelled". That is right when the workflow
    asked for it. At its own deadlines the worker reports the timeout instead, as the
    engine records it: the engine keeps the same deadlines, and whichever report comes
    first decides, so "cancelled" turned a timeout into a cancellation the workflow saw
    (`ActivityError` caused by `CancelledError`, not `TimeoutError`) on a last attempt.
    Stopping reports nothing: the attempt is still the engine's current one and runs
    again on the partition's next owner (a "cancelled" spent an attempt).
    """
    cut_short = isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    if reason is None or reason is CancelReason.REQUESTED or not cut_short:
        return report
    if reason is CancelReason.STOPPING:
        return None
    assert isinstance(report, ActivityFailedReport)
    return replace(report, failure=timeout_failure(reason.value))


def outcome_label(report: InboxMessage | None) -> str:
    """How an attempt ended, for the metrics: completed, failed (the activity raised),
    timeout, cancelled, or stopped (the worker stopped; it runs again elsewhere)."""
    if report is None:
        return "stopped"
    if isinstance(report, ActivityFailedReport):
        kind = report.failure.kind
        return "failed" if kind == "application" else kind
    return "completed"


def _first_deadline(task: ActivityTask, now_s: float) -> tuple[float, CancelReason] | None:
    """Seconds from now to the first of start-to-close (the attempt starts now) and the
    schedule-to-close deadline, and which it is; None without either."""
    candidates = []
    if task.start_to_close_timeout_ms:
        candidates.append((task.start_to_close_timeout_ms / 1000, CancelReason.START_TO_CLOSE))
    if task.close_deadline_ms:
        left = max(0.0, task.close_deadline_ms / 1000 - now_s)
        candidates.append((left, CancelReason.SCHEDULE_TO_CLOSE))
    return min(candidates) if candidates else None


def _log_abandoned(running: _Running, *, reported: bool) -> None:
    """Name an attempt whose activity ignored its cancellation and runs on unwatched.

    A stopping worker reports nothing for it (it runs again on the partition's next
    owner); a sync one also keeps its thread until it returns, which an operator can only
    see here.
    """
    task = running.task
    reason = running.cancel_reason
    log.warning(
        "activity abandoned: it did not stop within its cancellation grace",
        activity=task.activity_type, workflow_id=task.workflow_id, run_id=task.run_id,
        seq=task.seq, attempt=task.attempt, idempotency_key=task.idempotency_key,
        reason=None if reason is None else reason.value, grace_s=CANCEL_GRACE_S,
        reported=reported,
    )  # fmt: skip


def _log_not_produced(message: _Report, error: KafkaError) -> None:
    """Name a report the producer refused for good: an outcome's attempt is not finished
    (its offset stays uncommitted) and runs again on its partition's next owner, or the
    workflow's timeout and retry policy take over meanwhile."""
    then = (
        "its task's offset stays uncommitted, the attempt runs again on the partition's next owner"
        if isinstance(message, Outcome)
        else "it is dropped"
    )
    log.error(
        f"activity report not produced: {then}",
        report=type(message).__name__, error=str(error), workflow_id=message.workflow_id,
        run_id=message.run_id, seq=message.seq, attempt=message.attempt,
    )  # fmt: skip


def report_limit(settings: Mapping[str, Any], topic_max_bytes: int | None = None) -> int:
    """The largest report (key and value) the producer of ``settings`` takes, and the
    inbox too when its ``max.message.bytes`` is known: a lower ``message.max.bytes``
    (``-X``) makes librdkafka refuse a larger record in `produce` itself, and the worker
    then had no report to send at all; a lower topic config makes the broker refuse it."""
    message_max = int(settings.get("message.max.bytes", _MESSAGE_MAX_BYTES))
    limits = [MAX_RECORD_BYTES, message_max - _FRAMING_BYTES]
    if topic_max_bytes is not None:
        limits.append(topic_max_bytes - _FRAMING_BYTES)
    return min(limits)


def _batch_bytes(settings: Mapping[str, Any]) -> int:
    """The largest batch the producer of ``settings`` builds."""
    return int(settings.get("batch.size", _BATCH_BYTES))


def _report_producer(settings: Mapping[str, Any], topic_max_bytes: int | None = None) -> Producer:
    """The producer of reports; with ``topic_max_bytes``, its batches stay within it: the
    broker refuses a batch over the topic's ``max.message.bytes`` whole, small reports
    in it too."""
    config = {**producer_config(settings), "linger.ms": 2}
    if topic_max_bytes is not None:
        config["batch.size"] = max(1, min(_batch_bytes(settings), topic_max_bytes - _FRAMING_BYTES))
    return Producer(config)


def _finish(progress: PartitionProgress, offset: int, running: _Running) -> None:
    """The attempt is done: its offset, and those of its redeliveries, may be committed."""
    progress.finished(offset)
    for other, redelivered_at in running.redelivered:
        other.finished(redelivered_at)


def encode_report(message: InboxMessage, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The report's inbox record, within what Kafka takes.

    A failure too large loses its stack traces and details, and its messages are cut: it
    keeps its kind, type and retryability, which decide the retry and what the workflow's
    `except` matches. A result too large — or a failure still too large — becomes a
    non-retryable failure that says so (retrying would produce it again), and a heartbeat
    too large is sent without its details: dropping it, the engine heard no heartbeat
    and timed out a live activity, every attempt alike. A report that cannot be encoded
    at all is made encodable the same way (`_encodable`).
    """
    try:
        value = serde.encode_inbox(message)
    except EncodeError as error:
        return encode_report(_encodable(message, error), limit)
    key_size = len(message.workflow_id.encode())
    if key_size + len(value) <= limit:
        return value
    if isinstance(message, ActivityFailedReport):
        cut = replace(message, failure=_cut(message.failure, limit, len(value)))
        if key_size + len(cut_value := serde.encode_inbox(cut)) <= limit:
            return cut_value
    if isinstance(message, ActivityHeartbeat):
        log.warning(
            "heartbeat details too large to send: the heartbeat goes without them",
            workflow_id=message.workflow_id, seq=message.seq, size=len(value), limit=limit,
        )  # fmt: skip
        return serde.encode_inbox(replace(message, details=()))
    if not isinstance(message, Outcome):
        raise TypeError(f"not an activity report: {type(message).__name__}")
    size = f"is {len(value):,} bytes encoded; the limit is {limit:,}"
    return serde.encode_inbox(_failed_as(message, size, "RecordTooLarge"))


def _encodable(message: InboxMessage, error: EncodeError) -> InboxMessage:
    """``message`` in a form that encodes, saying why it had to change.

    The usual cause is text UTF-8 refuses: an exception message or stack trace holding a
    file name's surrogate escapes (``os.listdir`` of a name that is not UTF-8). Such a
    failure keeps its kind, type and retryability, its text escaped (``\\udcff``);
    anything else becomes a non-retryable ``ReportNotEncodable`` failure naming the
    error. Raising instead lost the outcome, and the workflow waited for its timeout.
    """
    if isinstance(message, ActivityFailedReport):
        escaped = replace(message, failure=_escaped(message.failure))
        if escaped != message:  # else escaping did not help: no second pass
            return escaped
    if isinstance(message, ActivityHeartbeat) and message.details:
        return replace(message, details=())
    if not isinstance(message, Outcome):
        raise error
    log.error(
        "activity report cannot be encoded: a failure that says why is sent instead",
        workflow_id=message.workflow_id, seq=message.seq, attempt=message.attempt,
        error=str(error),
    )  # fmt: skip
    return _failed_as(message, f"cannot be encoded: {_escape(str(error))}", "ReportNotEncodable")


def _failed_as(message: Outcome, why: str, failure_type: str) -> ActivityFailedReport:
    """The non-retryable failure sent for an outcome that cannot go as it is: retrying
    would run the activity's side effects again for the same refusal."""
    what = "result" if isinstance(message, ActivityCompletedReport) else "failure"
    failure = Failure(f"the activity's {what} {why}", type=failure_type, non_retryable=True)
    return ActivityFailedReport(
        message.workflow_id, message.run_id, message.seq, message.attempt, failure
    )


def _escaped(failure: Failure) -> Failure:
    """``failure`` and its causes with every text UTF-8 can encode."""
    cause = None if failure.cause is None else _escaped(failure.cause)
    return replace(
        failure,
        message=_escape(failure.message),
        type=_escape(failure.type),
        stack_trace=_escape(failure.stack_trace),
        cause=cause,
    )


def _escape(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut(failure: Failure, limit: int, size: int) -> Failure:
    """``failure`` and its causes without stack traces or details, each message cut so that
    all of them take at most half of ``limit``; the first message says so."""
    chain = []
    link: Failure | None = failure
    while link is not None:
        chain.append(link)
        link = link.cause
    budget = max(200, limit // (2 * len(chain)))
    cut: Failure | None = None
    for link in reversed(chain):
        text = link.message.encode()
        message = link.message
        if len(text) > budget:
            message = text[:budget].decode(errors="ignore") + f"… ({len(text):,} bytes, cut)"
        cut = replace(link, message=message, stack_trace="", details=(), cause=cut)
    assert cut is not None
    note = f" [the failure was {size:,} bytes encoded: stack traces and details dropped]"
    return replace(cut, message=cut.message + note)
