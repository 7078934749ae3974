"""An in-memory stand-in for the Kafka side: inbox, timers, activity queues, a virtual clock.

It drives the very same `WorkflowInstance.handle` the Kafka worker drives, applies each
`Transition` the way the Kafka worker commits it, and runs activities with the shared
`run_activity`. Time is virtual: it moves only when the environment skips it.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from runtime.daemon_pool import DaemonThreadPool
from runtime.engine.activity_executor import CANCEL_GRACE_S, CompletesAsync, run_activity
from runtime.engine.ids import parse_timer_id
from runtime.engine.instance import WorkflowInstance
from runtime.engine.registry import ActivityRegistry, WorkflowRegistry
from runtime.events import HistoryEvent
from runtime.messages import (
    ActivityHeartbeat,
    ActivityStartedReport,
    ActivityTask,
    AttemptKey,
    CancelActivityTask,
    DurableTimer,
    InboxMessage,
    Reply,
    StatusRecord,
    TimerFiredReport,
    attempt_key,
)
from runtime.payloads import Payload
from runtime.worker_spec import WorkerSpec

_log = structlog.get_logger("chronik.testing")

#: Real time given to running activities to make progress before virtual time jumps.
ACTIVITY_GRACE_SECONDS = 0.05
#: Before time jumps to a deadline of an activity still running — which would time out an
#: activity merely doing real work (a local HTTP call, a query) — it must have been quiet
#: this long: then it is taken as hung, as a test of a timeout means it to be.
RUNNING_ACTIVITY_GRACE_SECONDS = 1.0


@dataclass
class _Running:
    task: asyncio.Task[None]
    cancelled: asyncio.Event
    #: Set when virtual time passed the cancelled attempt's grace (`run_activity`).
    grace_ended: asyncio.Event
    #: The virtual time its cancel grace ends at; None while it is not cancelled.
    grace_ends_ms: int | None = None

    @property
    def in_grace(self) -> bool:
        return self.grace_ends_ms is not None and not self.grace_ended.is_set()


@dataclass
class InMemoryService:
    restore_each_message: bool = False
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    registry: WorkflowRegistry = field(default_factory=WorkflowRegistry)
    histories: dict[str, list[HistoryEvent]] = field(default_factory=dict)
    statuses: dict[str, StatusRecord] = field(default_factory=dict)
    on_reply: Callable[[Reply], None] = lambda reply: None
    result_requests: int = 0

    def __post_init__(self) -> None:
        self._instances: dict[str, WorkflowInstance] = {}
        self._inbox: deque[InboxMessage] = deque()
        self._timers: dict[tuple[str, str], DurableTimer] = {}
        self._heap: list[tuple[int, int, str, str]] = []
        self._counter = 0
        self._activity_queues: dict[str, tuple[ActivityRegistry, WorkerSpec]] = {}
        self._pending_tasks: dict[str, list[ActivityTask]] = {}
        self._running: dict[AttemptKey, _Running] = {}
        #: Where sync activities run unless their worker was given an executor: daemon
        #: threads, which neither the loop's close nor the interpreter's exit wait for (the
        #: loop's default pool kept a test waiting, after its workflow had finished, for a
        #: sync activity its workflow had timed out in virtual time). The environment sets
        #: no concurrency limit of its own, so the pool's is one no test reaches.
        self._threads = DaemonThreadPool(10_000, thread_name_prefix="chronik-test-activity")
        self._wakeup = asyncio.Event()
        self._skip_until: int | None = None
        self._skip_done = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.errors: list[Exception] = []

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name="chronik-memory-service")

    async def stop(self) -> None:
        for running in list(self._running.values()):
            running.task.cancel()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        # Its idle threads end now (one still running an activity, once that returns):
        # left open, each environment's threads waited for calls until the process
        # ended, and a test suite's environments piled them up.
        self._threads.shutdown(wait=False, cancel_futures=True)

    def register_worker(self, spec: WorkerSpec) -> None:
        for wf in spec.workflows:
            self.registry.add(wf)
        self._activity_queues[spec.task_queue] = (spec.activity_registry(), spec)
        for task in self._pending_tasks.pop(spec.task_queue, []):
            self._start_activity(task)
        self.wake()

    def unregister_worker(self, spec: WorkerSpec) -> None:
        self._activity_queues.pop(spec.task_queue, None)

    def wake(self) -> None:
        self._wakeup.set()

    def post(self, message: InboxMessage) -> None:
        self._inbox.append(message)
        self.wake()

    async def skip(self, duration_ms: int) -> None:
        """Advance virtual time by `duration_ms`, firing every timer due on the way."""
        self._skip_until = self.now_ms + duration_ms
        self._skip_done.clear()
        self.wake()
        await self._skip_done.wait()

    # --- the pump -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while self._inbox:
                message = self._inbox.popleft()
                try:
                    self._process(message)
                except Exception as exc:
                    # An engine bug: keep serving, and make the environment fail loudly.
                    _log.exception("message processing failed", message=repr(message))
                    self.errors.append(exc)
                await asyncio.sleep(0)  # let activities and clients run between messages
            target = self._skip_until
            may_skip = target is not None or self.result_requests > 0
            if may_skip and self._running:
                if await self._progress_within(ACTIVITY_GRACE_SECONDS):
                    continue
                due = self._next_due()
                if (
                    due is not None
                    and self._ends_running_activity(due)
                    and await self._progress_within(
                        RUNNING_ACTIVITY_GRACE_SECONDS - ACTIVITY_GRACE_SECONDS
                    )
                ):
                    continue
            if may_skip:
                due = self._next_due()
                if due is not None and (target is None or _due_at(due) <= target):
                    self._reach(due)
                    continue
                if target is not None:
                    self.now_ms = max(self.now_ms, target)
                    self._skip_until = None
                    self._skip_done.set()
                    continue
            await self._wakeup.wait()
            self._wakeup.clear()

    async def _progress_within(self, seconds: float) -> bool:
        """Whether anything happened (a report, a message) within ``seconds``."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            return False
        self._wakeup.clear()
        return True

    def _ends_running_activity(self, due: DurableTimer | _Running) -> bool:
        """A deadline of an activity with an attempt running now, or the end of a
        cancelled attempt's grace: its cleanup may be doing real work."""
        if isinstance(due, _Running):
            return True
        parsed = parse_timer_id(due.timer_id)
        return parsed.family == "activity" and any(
            key[:3] == (due.workflow_id, due.run_id, parsed.seq) for key in self._running
        )

    def _next_due(self) -> DurableTimer | _Running | None:
        """What virtual time reaches first: the next timer, or the end of the grace of a
        cancelled attempt still running (the grace is virtual time too)."""
        timer = self._next_timer()
        graces = [r for r in self._running.values() if r.in_grace]
        grace = min(graces, key=_due_at, default=None)
        if grace is None or (timer is not None and timer.fire_at_ms <= _due_at(grace)):
            return timer
        return grace

    def _reach(self, due: DurableTimer | _Running) -> None:
        """Move virtual time to ``due``: fire the timer, or end the attempt's grace."""
        if isinstance(due, DurableTimer):
            self._fire(due)
            return
        self.now_ms = max(self.now_ms, _due_at(due))
        due.grace_ended.set()

    def _next_timer(self) -> DurableTimer | None:
        while self._heap:
            fire_at, _, wid, tid = self._heap[0]
            timer = self._timers.get((wid, tid))
            if timer is None or timer.fire_at_ms != fire_at:
                heapq.heappop(self._heap)
                continue
            return timer
        return None

    def _fire(self, timer: DurableTimer) -> None:
        del self._timers[(timer.workflow_id, timer.timer_id)]
        self.now_ms = max(self.now_ms, timer.fire_at_ms)
        self._inbox.append(
            TimerFiredReport(timer.workflow_id, timer.run_id, timer.timer_id, timer.fire_at_ms)
        )

    # --- applying a transition -----------------------------------------------------

    def instance(self, workflow_id: str) -> WorkflowInstance:
        inst = self._instances.get(workflow_id)
        if inst is None:
            history = self.histories.get(workflow_id, [])
            inst = WorkflowInstance.restore(workflow_id, history, self.registry)
            self._instances[workflow_id] = inst
        return inst

    def _process(self, message: InboxMessage) -> None:
        wid = message.workflow_id
        inst = self.instance(wid)
        transition = inst.handle(message, self.now_ms)
        self.histories.setdefault(wid, []).extend(transition.events)
        for timer in transition.timers:
            self._timers[(timer.workflow_id, timer.timer_id)] = timer
            self._counter += 1
            heapq.heappush(self._heap, (timer.fire_at_ms, self._counter, wid, timer.timer_id))
        for key in transition.cancelled_timers:
            self._timers.pop(key, None)
        for task in transition.tasks:
            if isinstance(task, ActivityTask):
                self._start_activity(task)
            else:
                self._cancel_activity(task)
        self._inbox.extend(transition.messages)
        if transition.status is not None:
            self.statuses[wid] = transition.status
        for reply in transition.replies:
            self.on_reply(reply)
        if self.restore_each_message and inst.is_idle():
            del self._instances[wid]

    # --- activities -----------------------------------------------------------------

    def _start_activity(self, task: ActivityTask) -> None:
        queue = self._activity_queues.get(task.task_queue)
        if queue is None:
            self._pending_tasks.setdefault(task.task_queue, []).append(task)
            return
        registry, spec = queue
        key = attempt_key(task)
        cancelled, grace_ended = asyncio.Event(), asyncio.Event()
        started_at_ms = self.now_ms  # the attempt starts now; its task runs a little later

        def heartbeat(details: tuple[Payload, ...]) -> None:
            # The engine ignores a cancelled attempt's heartbeats; delivered, each one woke
            # the service as progress, and held virtual time for the whole grace.
            if not cancelled.is_set():
                self.post(
                    ActivityHeartbeat(
                        task.workflow_id, task.run_id, task.seq, task.attempt, details
                    )
                )

        async def execute() -> None:
            try:
                report = await run_activity(
                    registry,
                    task,
                    converter=spec.data_converter,
                    on_heartbeat=heartbeat,
                    cancelled=cancelled,
                    executor=spec.activity_executor or self._threads,
                    grace_ended=grace_ended,
                    started_at_ms=started_at_ms,
                )
                if not isinstance(report, CompletesAsync):  # else it completes from outside
                    self.post(report)
            finally:
                self._running.pop(key, None)
                self.wake()

        if task.report_start:  # as the Kafka activity worker does
            self.post(
                ActivityStartedReport(
                    task.workflow_id, task.run_id, task.seq, task.attempt, "memory"
                )
            )
        self._running[key] = _Running(asyncio.create_task(execute()), cancelled, grace_ended)

    def _cancel_activity(self, cancel: CancelActivityTask) -> None:
        key = attempt_key(cancel)
        running = self._running.get(key)
        if running is not None and not running.cancelled.is_set():
            running.cancelled.set()
            running.grace_ends_ms = self.now_ms + round(CANCEL_GRACE_S * 1000)
        for queue, tasks in self._pending_tasks.items():
            self._pending_tasks[queue] = [t for t in tasks if attempt_key(t) != key]


def _due_at(due: DurableTimer | _Running) -> int:
    """The virtual time a timer fires at, or a cancelled attempt's grace ends at."""
    if isinstance(due, DurableTimer):
        return due.fire_at_ms
    return due.grace_ends_ms if due.grace_ends_ms is not None else 0
