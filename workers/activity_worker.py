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

This module is the worker itself: its poll loop, dispatch, slots, offsets and
rebalances. What an attempt's end means is `workers.activity_attempts`, its heartbeats
`workers.activity_heartbeats`; a report's record is `workers.activity_reports`, and
getting it into Kafka `workers.activity_report_sender`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry

from runtime.converter import DataConverter
from runtime.daemon_pool import DaemonThreadPool
from runtime.engine import ActivityRegistry, run_activity
from runtime.engine.activity_executor import CANCEL_GRACE_S, AttemptOutcome, CompletesAsync
from runtime.messages import ActivityStartedReport, CancelActivityTask, attempt_key
from runtime.worker_spec import DEFAULT_GRACEFUL_SHUTDOWN
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.consumed import Consumed, consume_available
from topics.errors import DecodeError
from workers.activity_attempts import (
    CancelReason,
    QueuedAttempt,
    RunningAttempt,
    finish_attempt,
    first_deadline,
    log_abandoned,
    outcome,
    outcome_label,
)
from workers.activity_heartbeats import HeartbeatThrottle, watch_heartbeats
from workers.activity_report_sender import ReportSender
from workers.assignment import assign_at_committed
from workers.loop_watch import LoopWatch
from workers.membership import Member, on_consume_error
from workers.metrics import ActivityWorkerMetrics
from workers.offsets import PartitionProgress

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

#: While a stop waits for running activities, the consumer is polled this often (seconds):
#: far within ``max.poll.interval.ms``, past which it left its group mid-stop.
_DRAIN_POLL_S = 1.0
#: How long a stop waits for the reports of finished activities to reach Kafka.
_FLUSH_S = 10.0


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
        self._admin = TopicAdmin(member.client_config())
        #: The one thread that polls the consumer (and so runs its rebalance callbacks).
        self._poller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chronik-poll")
        self._reports = ReportSender(
            member.client_config(), self._names.inbox, self._admin, self._poller
        )
        self._heartbeats = HeartbeatThrottle(self._reports.send, config.heartbeat_interval_s)
        self._progress: dict[int, PartitionProgress] = {}
        self._running: dict[tuple[str, str, int, int], RunningAttempt] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        #: Dispatched tasks waiting for one of the ``max_concurrent`` slots.
        self._queued: deque[QueuedAttempt] = deque()
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
        await loop.run_in_executor(self._poller, self._reports.follow_inbox_limit)
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
        await self._reports.flush(_FLUSH_S)  # runs the delivery callbacks that mark tasks finished
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
        self._reports.poll()
        self._commit()

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
        running = self._running[key] = RunningAttempt(decoded, asyncio.Event())
        self._queued.append(QueuedAttempt(running, progress, record.offset, record.partition))
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

    async def _execute(
        self, running: RunningAttempt, progress: PartitionProgress, offset: int
    ) -> None:
        """Run the attempt and report its outcome; the offset is finished only once Kafka
        has the report. Finishing it whenever the report could not be produced (an
        unencodable failure, a refusal of the producer) committed the attempt as done with
        its outcome lost, and the workflow waited for its activity's timeout."""
        task = running.task
        try:
            if task.report_start:
                self._reports.send(
                    ActivityStartedReport(
                        task.workflow_id,
                        task.run_id,
                        task.seq,
                        task.attempt,
                        self._config.member.worker_id,
                    )
                )
            began = time.monotonic()
            ended = await self._run_with_deadline(running)
            if isinstance(ended, CompletesAsync):  # it goes on outside: nothing to report
                self._metrics.finished(task.activity_type, "async", time.monotonic() - began)
                finish_attempt(progress, offset, running)
                return
            report = outcome(ended, running.cancel_reason)
            self._metrics.finished(
                task.activity_type, outcome_label(report), time.monotonic() - began
            )
            if running.abandoned:
                log_abandoned(running, reported=report is not None)
            if report is None:  # stopped: its offset stays open, it runs again elsewhere
                return
            # The task's offset may be committed once its report is in Kafka, not before.
            self._reports.send(
                report, on_delivered=lambda: finish_attempt(progress, offset, running)
            )
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

    async def _run_with_deadline(self, running: RunningAttempt) -> AttemptOutcome:
        """Run the attempt, cancelling it when the workflow would time it out.

        The engine times the attempt out by itself, and then sends a cancellation; these
        local deadlines only free the slot, and do so even when that cancellation waits
        behind tasks of partitions paused because every slot is taken.
        """
        task, loop = running.task, asyncio.get_running_loop()
        first = first_deadline(task, time.time())
        deadline = None if first is None else loop.call_later(first[0], running.cancel, first[1])
        running.last_beat = time.monotonic()
        if task.heartbeat_timeout_ms:
            watch_heartbeats(running)
        try:
            return await run_activity(
                self._registry,
                task,
                converter=self._converter,
                on_heartbeat=lambda details: self._heartbeats.heartbeat(running, details),
                cancelled=running.cancelled,
                executor=self._executor,
                on_abandoned=running.abandon,
            )
        finally:
            for handle in (deadline, running.watchdog):
                if handle is not None:
                    handle.cancel()

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
        # Assigned here, before any pause: pausing a partition librdkafka has not assigned
        # yet does nothing, and the records of partitions given to a busy worker flowed in,
        # unbounded.
        assign_at_committed(consumer, assigned)
        if self._in_loop(self._assign, assigned):
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
        kept: deque[QueuedAttempt] = deque()
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
