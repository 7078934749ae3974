"""`WorkflowInstance`: all runs of one workflow id, driven one inbox message at a time.

`handle(message, now_ms)` decides which events the message implies, applies them (which
resumes the workflow code and records the commands it issues) and returns a `Transition`.
`restore(history)` applies recorded events through the very same `_apply`, checking the
commands the code issues against the recorded ones. Live and replay share one code path;
only the side effects (tasks, timers, replies) are emitted live.

Cost per message is independent of history length: a live instance keeps its coroutine and
state machines; replay happens only on restore.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from runtime.engine.commands import Command, describe, same_command
from runtime.engine.registry import WorkflowRegistry
from runtime.engine.state import (
    ActivityState,
    ChildState,
    EventClass,
    Phase,
    RunState,
    classify,
)
from runtime.engine.transition import Transition
from runtime.engine.workflow_run import PATCH_MARKER, WorkflowInfo, WorkflowRun
from runtime.errors import (
    NonDeterminismError,
    already_started_failure,
    failure_from_exception,
    not_found_failure,
)
from runtime.events import (
    ActivityAttemptFailed,
    ActivityCancelled,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeatRecorded,
    ActivityRetryScheduled,
    ActivityScheduled,
    ActivityStarted,
    ActivityTimedOut,
    ChildWorkflowCancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowInitiated,
    ChildWorkflowStarted,
    ChildWorkflowStartFailed,
    EventAttributes,
    ExternalSignalSent,
    HistoryEvent,
    MarkerRecorded,
    ParentRef,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    UpdateAccepted,
    UpdateCompleted,
    WorkflowCancelled,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityHeartbeat,
    ActivityStartedReport,
    ActivityTask,
    CancelActivityTask,
    CancelWorkflow,
    ChildClosedReport,
    ChildStartedReport,
    ChildStartFailedReport,
    DescribeWorkflow,
    DurableTimer,
    FetchHistory,
    GetWorkflowResult,
    HistoryPage,
    IdReusePolicy,
    InboxMessage,
    QueryAnswer,
    QueryWorkflow,
    Reply,
    ReplyBody,
    RequestAccepted,
    RequestFailed,
    SignalWorkflow,
    StartAccepted,
    StartWorkflow,
    StatusRecord,
    TerminateWorkflow,
    TimerFiredReport,
    UpdateOutcome,
    UpdateWorkflow,
    WorkflowDescription,
    WorkflowOutcome,
    WorkflowStatus,
)
from runtime.payloads import Failure
from runtime.retry import next_attempt_delay_ms

EXECUTION_TIMEOUT_TIMER = "workflow:execution_timeout"
_CLOSED_STATUS = {
    WorkflowCompleted: WorkflowStatus.COMPLETED,
    WorkflowFailed: WorkflowStatus.FAILED,
    WorkflowCancelled: WorkflowStatus.CANCELLED,
    WorkflowTerminated: WorkflowStatus.TERMINATED,
    WorkflowTimedOut: WorkflowStatus.TIMED_OUT,
    WorkflowContinuedAsNew: WorkflowStatus.CONTINUED_AS_NEW,
}
_FAILED_STATUSES = {
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
    WorkflowStatus.TERMINATED,
    WorkflowStatus.TIMED_OUT,
}


def derive_run_id(workflow_id: str, request_id: str, event_id: int) -> str:
    """Deterministic run id: the same start replayed anywhere gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chronik:{workflow_id}:{request_id}:{event_id}"))


def activity_timer_id(seq: int, attempt: int, kind: str) -> str:
    return f"activity:{seq}:{attempt}:{kind}"


class WorkflowInstance:
    """Every run of one workflow id. Not thread-safe; one host task drives it."""

    def __init__(self, workflow_id: str, registry: WorkflowRegistry) -> None:
        self.workflow_id = workflow_id
        self.registry = registry
        self._history: list[HistoryEvent] = []
        self._run: RunState | None = None
        self._runs: dict[str, RunState] = {}
        self._start_requests: dict[str, str] = {}
        self._outcomes: dict[str, WorkflowOutcome] = {}
        self._next_run: dict[str, str] = {}
        self._result_waiters: list[GetWorkflowResult] = []
        self._update_waiters: dict[str, list[tuple[str, str]]] = {}
        self._fx: Transition | None = None
        self._now_ms = 0
        self._replay_events: Sequence[HistoryEvent] = ()
        self._cursor = 0
        self._code_enabled = True
        #: Every non-determinism found while restoring (the Replayer reports them).
        self.task_failures: list[NonDeterminismError] = []

    # --- public -----------------------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        workflow_id: str,
        history: Sequence[HistoryEvent],
        registry: WorkflowRegistry,
        *,
        replay_all_runs: bool = False,
    ) -> WorkflowInstance:
        """Rebuild an instance by replaying `history` (empty: no run yet).

        Only the newest run's code is replayed unless `replay_all_runs`; older runs are
        closed and need only their bookkeeping.
        """
        instance = cls(workflow_id, registry)
        instance._replay(history, replay_all_runs)
        return instance

    @property
    def history(self) -> Sequence[HistoryEvent]:
        return self._history

    @property
    def current_run_id(self) -> str | None:
        return self._run.run_id if self._run else None

    def status(self) -> StatusRecord | None:
        return self._status_record(self._run) if self._run else None

    def is_idle(self) -> bool:
        """True when no in-memory waiter would be lost by evicting this instance."""
        return not self.has_waiters()

    def has_waiters(self) -> bool:
        return bool(self._result_waiters) or any(self._update_waiters.values())

    def handle(self, message: InboxMessage, now_ms: int) -> Transition:
        """Apply one inbox message; deterministic given the history, message and `now_ms`."""
        self._fx = Transition()
        self._now_ms = now_ms
        try:
            self._before_message()
            self._dispatch(message)
            return self._fx
        finally:
            self._fx = None

    # --- replay -------------------------------------------------------------------------------

    def _replay(self, events: Sequence[HistoryEvent], all_runs: bool) -> None:
        last_start = max(
            (i for i, e in enumerate(events) if isinstance(e.attributes, WorkflowStarted)),
            default=0,
        )
        self._replay_events = events
        self._cursor = 0
        try:
            while self._cursor < len(events):
                index = self._cursor
                event = events[index]
                self._cursor += 1
                self._code_enabled = all_runs or index >= last_start
                self._now_ms = event.timestamp_ms
                self._replay_event(event)
        finally:
            self._replay_events = ()
            self._code_enabled = True

    def _replay_event(self, event: HistoryEvent) -> None:
        kind = classify(event.attributes)
        run = self._run
        if kind is EventClass.COMMAND and run is not None and run.code is not None:
            if run.pending_commands:
                expected = run.pending_commands.pop(0)
                if not same_command(expected, event.attributes):
                    self._nondeterminism(run, event.event_id, event.attributes, describe(expected))
            elif not run.stuck:
                self._nondeterminism(run, event.event_id, event.attributes, "nothing")
        self._history.append(event)
        self._apply(event)
        if kind is EventClass.WAKE:
            self._drive()

    def _match(self, run: RunState, command: Command) -> None:
        """Replay: the code issued `command`; the next recorded command event must agree."""
        if run.pending_commands:
            run.pending_commands.append(command)
            return
        events = self._replay_events
        while self._cursor < len(events):
            ahead = events[self._cursor]
            if classify(ahead.attributes) is not EventClass.BOOKKEEPING or ahead.closes_run:
                break
            self._cursor += 1
            self._history.append(ahead)
            self._apply(ahead)
        ahead_event = events[self._cursor] if self._cursor < len(events) else None
        if ahead_event is not None and classify(ahead_event.attributes) is EventClass.COMMAND:
            if not same_command(command, ahead_event.attributes):
                self._nondeterminism(
                    run, ahead_event.event_id, ahead_event.attributes, describe(command)
                )
                return
            self._cursor += 1
            self._history.append(ahead_event)
            self._apply(ahead_event)
            return
        if run.lenient:
            run.pending_commands.append(command)
            return
        if ahead_event is None:
            last_id = events[-1].event_id if events else 0
            self._nondeterminism(run, last_id + 1, None, describe(command))
        else:
            self._nondeterminism(
                run, ahead_event.event_id, ahead_event.attributes, describe(command)
            )

    def _nondeterminism(
        self, run: RunState, event_id: int, expected: EventAttributes | None, got: str
    ) -> None:
        error = NonDeterminismError(
            event_id, describe(expected) if expected else "end of history", got
        )
        self.task_failures.append(error)
        run.stuck = error
        run.pending_commands.clear()
        if run.code is not None:
            run.code.destroy()
            run.code = None

    def _patch_lookup(self, patch_id: str) -> bool:
        if self._fx is not None:
            return True
        for event in self._replay_events[self._cursor :]:
            attrs = event.attributes
            if classify(attrs) is EventClass.WAKE:
                break
            if (
                isinstance(attrs, MarkerRecorded)
                and attrs.name == PATCH_MARKER
                and attrs.marker_id == patch_id
            ):
                return True
        return False

    # --- running code -------------------------------------------------------------------------

    def _drive(self) -> None:
        """Run the current run's code until blocked; turn its commands into events."""
        run = self._run
        while run is not None and run is self._run and run.code is not None and not run.closed:
            code = run.code
            code.replaying = self._fx is None
            try:
                code.run_until_blocked()
            except Exception as exc:
                run.stuck = NonDeterminismError(self._last_event_id(), "a runnable task", repr(exc))
                code.destroy()
                run.code = None
                return
            commands = code.take_commands()
            if not commands:
                return
            for command in commands:
                if run.closed or run.code is None:
                    break
                if self._fx is None:
                    self._match(run, command)
                else:
                    self._record_command(run, command)

    def _record_command(self, run: RunState, command: Command) -> None:
        if isinstance(command, WorkflowContinuedAsNew):
            new_run_id = derive_run_id(
                self.workflow_id, "continue-as-new", self._last_event_id() + 1
            )
            self._record(replace(command, new_run_id=new_run_id))
            old = run.started
            self._record(
                WorkflowStarted(
                    workflow_type=command.workflow_type,
                    task_queue=command.task_queue,
                    input=command.input,
                    request_id=f"continue-as-new:{new_run_id}",
                    execution_timeout_ms=old.execution_timeout_ms,
                    run_timeout_ms=old.run_timeout_ms,
                    parent=old.parent,
                    continued_from_run_id=run.run_id,
                    first_run_id=old.first_run_id or run.run_id,
                ),
                run_id=new_run_id,
            )
            return
        self._record(command)

    def _record(self, attrs: EventAttributes, run_id: str | None = None) -> HistoryEvent:
        assert self._fx is not None
        rid = run_id or (self._run.run_id if self._run else "")
        event = HistoryEvent(self.workflow_id, rid, self._last_event_id() + 1, self._now_ms, attrs)
        self._history.append(event)
        self._fx.events.append(event)
        self._apply(event)
        if classify(attrs) is EventClass.WAKE:
            self._drive()
        return event

    def _last_event_id(self) -> int:
        return self._history[-1].event_id if self._history else 0

    def _before_message(self) -> None:
        run = self._run
        if run is None or run.closed:
            return
        if run.stuck is not None and not run.stuck_recorded:
            failure = failure_from_exception(run.stuck, with_stack=False)
            self._record(WorkflowTaskFailed(failure))
        if run.pending_commands and run.code is not None:
            pending, run.pending_commands = run.pending_commands, []
            for command in pending:
                if not run.closed:
                    self._record_command(run, command)
            self._drive()

    # --- effects (live only) -------------------------------------------------------------------

    def _reply(self, reply_to: str | None, request_id: str, body: ReplyBody) -> None:
        if self._fx is not None and reply_to:
            self._fx.replies.append(Reply(reply_to, request_id, self.workflow_id, body))

    def _send(self, message: InboxMessage) -> None:
        if self._fx is not None:
            self._fx.messages.append(message)

    def _arm(self, run: RunState, timer_id: str, fire_at_ms: int) -> None:
        run.deadlines[timer_id] = fire_at_ms
        if self._fx is not None:
            # The last operation on a timer id within one transition wins, so the host may
            # apply `timers` and `cancelled_timers` in any order.
            key = (self.workflow_id, timer_id)
            fx = self._fx
            fx.cancelled_timers = [k for k in fx.cancelled_timers if k != key]
            fx.timers = [t for t in fx.timers if t.timer_id != timer_id]
            fx.timers.append(DurableTimer(self.workflow_id, run.run_id, timer_id, fire_at_ms))

    def _disarm(self, run: RunState, timer_id: str) -> None:
        if run.deadlines.pop(timer_id, None) is not None and self._fx is not None:
            fx = self._fx
            fx.timers = [t for t in fx.timers if t.timer_id != timer_id]
            fx.cancelled_timers.append((self.workflow_id, timer_id))

    def _publish_status(self, run: RunState) -> None:
        if self._fx is not None:
            self._fx.status = self._status_record(run)

    def _status_record(self, run: RunState) -> StatusRecord:
        return StatusRecord(
            workflow_id=self.workflow_id,
            run_id=run.run_id,
            workflow_type=run.workflow_type,
            task_queue=run.task_queue,
            status=run.status,
            start_time_ms=run.start_time_ms,
            close_time_ms=run.close_time_ms,
            history_length=self._last_event_id(),
            failure=run.failure,
        )

    # --- applying events (live and replay) -------------------------------------------------------

    def _apply(self, event: HistoryEvent) -> None:
        attrs = event.attributes
        ts = event.timestamp_ms
        if isinstance(attrs, WorkflowStarted):
            self._apply_started(event, attrs)
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return
        code = run.code
        if code is not None and classify(attrs) is EventClass.WAKE:
            code.now_ms = ts
        match attrs:
            case (
                WorkflowCompleted() | WorkflowFailed() | WorkflowCancelled() | WorkflowTerminated()
            ):
                self._apply_closed(run, event)
            case WorkflowTimedOut() | WorkflowContinuedAsNew():
                self._apply_closed(run, event)
            case WorkflowCancelRequested(request_id=rid):
                run.cancel_request_ids.add(rid)
                if code is not None:
                    code.request_cancel()
            case WorkflowTaskFailed():
                run.lenient = True
                if run.stuck is not None:
                    run.stuck_recorded = True
            case SignalReceived(signal_name=name, input=payloads, request_id=rid):
                run.signal_ids.add(rid)
                if code is not None:
                    code.deliver_signal(name, payloads)
            case UpdateAccepted(update_id=uid, update_name=name, input=payloads):
                run.updates[uid] = None
                if code is not None:
                    code.start_update(uid, name, payloads)
            case UpdateCompleted(update_id=uid):
                run.updates[uid] = attrs
                for reply_to, request_id in self._update_waiters.pop(uid, []):
                    self._reply(
                        reply_to, request_id, UpdateOutcome(uid, attrs.result, attrs.failure)
                    )
            case ActivityScheduled(seq=seq):
                state = ActivityState(attrs, ts)
                run.activities[seq] = state
                if attrs.schedule_to_close_timeout_ms:
                    self._arm(
                        run,
                        f"activity:{seq}:schedule_to_close",
                        ts + attrs.schedule_to_close_timeout_ms,
                    )
                self._dispatch_attempt(run, state, ts)
            case ActivityStarted(seq=seq):
                state = run.activities[seq]
                state.phase = Phase.STARTED
                sched = state.scheduled
                self._disarm(run, activity_timer_id(seq, state.attempt, "schedule_to_start"))
                if sched.start_to_close_timeout_ms:
                    self._arm(
                        run,
                        activity_timer_id(seq, state.attempt, "start_to_close"),
                        ts + sched.start_to_close_timeout_ms,
                    )
                if sched.heartbeat_timeout_ms:
                    self._arm(
                        run,
                        activity_timer_id(seq, state.attempt, "heartbeat"),
                        ts + sched.heartbeat_timeout_ms,
                    )
            case ActivityHeartbeatRecorded(seq=seq, details=details):
                state = run.activities[seq]
                state.heartbeat_details = details
                if state.scheduled.heartbeat_timeout_ms:
                    self._arm(
                        run,
                        activity_timer_id(seq, state.attempt, "heartbeat"),
                        ts + state.scheduled.heartbeat_timeout_ms,
                    )
            case ActivityAttemptFailed(seq=seq, attempt=attempt, next_attempt_delay_ms=delay):
                state = run.activities[seq]
                self._end_attempt(run, state)
                state.phase = Phase.BACKOFF
                self._arm(run, f"retry:{seq}:{attempt + 1}", ts + delay)
            case ActivityRetryScheduled(seq=seq, attempt=attempt):
                state = run.activities[seq]
                self._disarm(run, f"retry:{seq}:{attempt}")
                state.attempt = attempt
                self._dispatch_attempt(run, state, ts)
            case ActivityCompleted(seq=seq, result=result):
                self._close_activity(run, seq)
                if code is not None:
                    code.resolve_activity(seq, result, None)
            case (
                ActivityFailed(seq=seq, failure=failure)
                | ActivityTimedOut(seq=seq, failure=failure)
            ):
                state = self._close_activity(run, seq)
                if code is not None:
                    error = code.activity_error(seq, state.scheduled.activity_type, failure)
                    code.resolve_activity(seq, None, error)
            case ActivityCancelRequested(seq=seq):
                state = run.activities[seq]
                if state.phase in (Phase.SCHEDULED, Phase.STARTED) and self._fx is not None:
                    self._fx.tasks.append(
                        CancelActivityTask(
                            self.workflow_id,
                            run.run_id,
                            seq,
                            state.attempt,
                            state.scheduled.task_queue,
                        )
                    )
                self._close_activity(run, seq)
            case ActivityCancelled():
                pass
            case TimerStarted(seq=seq, fire_at_ms=fire_at):
                run.timers.add(seq)
                self._arm(run, f"sleep:{seq}", fire_at)
            case TimerFired(seq=seq):
                run.timers.discard(seq)
                run.deadlines.pop(f"sleep:{seq}", None)
                if code is not None:
                    code.fire_timer(seq)
            case TimerCancelled(seq=seq):
                run.timers.discard(seq)
                self._disarm(run, f"sleep:{seq}")
            case ChildWorkflowInitiated(seq=seq, workflow_id=child_id):
                run.children[seq] = ChildState(child_id)
                self._send(
                    StartWorkflow(
                        workflow_id=child_id,
                        workflow_type=attrs.workflow_type,
                        task_queue=attrs.task_queue,
                        input=attrs.input,
                        request_id=f"{run.run_id}/child/{seq}",
                        parent=ParentRef(self.workflow_id, run.run_id, seq),
                        execution_timeout_ms=attrs.execution_timeout_ms,
                    )
                )
            case ChildWorkflowStarted(seq=seq, run_id=child_run):
                run.children[seq].run_id = child_run
                if code is not None:
                    code.child_started(seq, child_run)
            case (
                ChildWorkflowStartFailed(seq=seq, failure=failure)
                | ChildWorkflowFailed(seq=seq, failure=failure)
            ):
                run.children[seq].closed = True
                if code is not None:
                    code.child_closed(seq, None, failure)
            case ChildWorkflowCompleted(seq=seq, result=result):
                run.children[seq].closed = True
                if code is not None:
                    code.child_closed(seq, result, None)
            case ChildWorkflowCancelRequested(seq=seq):
                child = run.children[seq]
                self._send(
                    CancelWorkflow(
                        child.workflow_id,
                        child.run_id,
                        "parent cancelled",
                        f"{run.run_id}/cancel-child/{seq}",
                    )
                )
            case ExternalSignalSent(seq=seq, workflow_id=target, signal_name=name, input=payloads):
                self._send(
                    SignalWorkflow(target, None, name, payloads, f"{run.run_id}/signal/{seq}")
                )
            case MarkerRecorded():
                pass

    def _apply_started(self, event: HistoryEvent, attrs: WorkflowStarted) -> None:
        run = RunState(event.run_id, attrs, event.timestamp_ms)
        if not attrs.first_run_id:
            run.started = replace(attrs, first_run_id=event.run_id)
        self._runs[run.run_id] = run
        self._run = run
        self._start_requests[attrs.request_id] = run.run_id
        if attrs.continued_from_run_id:
            self._next_run[attrs.continued_from_run_id] = run.run_id
        if attrs.execution_timeout_ms:
            self._arm(run, EXECUTION_TIMEOUT_TIMER, event.timestamp_ms + attrs.execution_timeout_ms)
        self._publish_status(run)
        if attrs.parent is not None and not attrs.continued_from_run_id:
            p = attrs.parent
            self._send(
                ChildStartedReport(p.workflow_id, p.run_id, p.seq, self.workflow_id, run.run_id)
            )
        definition = self.registry.get(attrs.workflow_type)
        if definition is None or not self._code_enabled:
            return
        start = datetime.fromtimestamp(event.timestamp_ms / 1000, tz=UTC)
        info = WorkflowInfo(
            workflow_id=self.workflow_id,
            run_id=run.run_id,
            workflow_type=attrs.workflow_type,
            task_queue=attrs.task_queue,
            start_time=start,
            first_run_id=run.started.first_run_id,
            continued_from_run_id=attrs.continued_from_run_id,
            parent=attrs.parent,
            execution_timeout=timedelta(milliseconds=attrs.execution_timeout_ms)
            if attrs.execution_timeout_ms
            else None,
        )
        run.code = WorkflowRun(definition, info, self.registry.converter, self._patch_lookup)
        run.code.replaying = self._fx is None
        run.code.start(attrs.input)

    def _apply_closed(self, run: RunState, event: HistoryEvent) -> None:
        attrs = event.attributes
        run.status = _CLOSED_STATUS[type(attrs)]
        run.close_time_ms = event.timestamp_ms
        match attrs:
            case WorkflowCompleted(result=result):
                run.result = result
            case (
                WorkflowFailed(failure=f)
                | WorkflowCancelled(failure=f)
                | WorkflowTimedOut(failure=f)
            ):
                run.failure = f
            case WorkflowTerminated(reason=reason):
                run.failure = Failure(reason or "terminated", kind="terminated")
            case _:
                pass
        for timer_id in list(run.deadlines):
            self._disarm(run, timer_id)
        for seq, state in run.activities.items():
            if state.phase in (Phase.SCHEDULED, Phase.STARTED) and self._fx is not None:
                self._fx.tasks.append(
                    CancelActivityTask(
                        self.workflow_id, run.run_id, seq, state.attempt, state.scheduled.task_queue
                    )
                )
            state.phase = Phase.CLOSED
        if run.code is not None and not isinstance(attrs, WorkflowCompleted | WorkflowFailed):
            run.code.closed = True
        outcome = WorkflowOutcome(run.run_id, run.status, run.result, run.failure)
        self._outcomes[run.run_id] = outcome
        self._publish_status(run)
        parent = run.started.parent
        if parent is not None and not isinstance(attrs, WorkflowContinuedAsNew):
            self._send(
                ChildClosedReport(
                    parent.workflow_id,
                    parent.run_id,
                    parent.seq,
                    self.workflow_id,
                    run.run_id,
                    run.result,
                    None if run.status is WorkflowStatus.COMPLETED else run.failure,
                )
            )
        self._answer_waiters()

    def _dispatch_attempt(self, run: RunState, state: ActivityState, ts: int) -> None:
        state.phase = Phase.SCHEDULED
        sched = state.scheduled
        seq, attempt = sched.seq, state.attempt
        if sched.schedule_to_start_timeout_ms:
            self._arm(
                run,
                activity_timer_id(seq, attempt, "schedule_to_start"),
                ts + sched.schedule_to_start_timeout_ms,
            )
        # Without a schedule-to-start timeout, start-to-close is armed at dispatch too, so a
        # host that never reports starts is still protected; ActivityStarted re-arms it.
        if sched.start_to_close_timeout_ms and not sched.schedule_to_start_timeout_ms:
            timer_id = activity_timer_id(seq, attempt, "start_to_close")
            self._arm(run, timer_id, ts + sched.start_to_close_timeout_ms)
        if sched.heartbeat_timeout_ms:
            self._arm(
                run, activity_timer_id(seq, attempt, "heartbeat"), ts + sched.heartbeat_timeout_ms
            )
        if self._fx is not None:
            self._fx.tasks.append(
                ActivityTask(
                    workflow_id=self.workflow_id,
                    run_id=run.run_id,
                    workflow_type=run.workflow_type,
                    seq=seq,
                    attempt=attempt,
                    activity_type=sched.activity_type,
                    task_queue=sched.task_queue,
                    input=sched.input,
                    scheduled_time_ms=ts,
                    start_to_close_timeout_ms=sched.start_to_close_timeout_ms,
                    heartbeat_timeout_ms=sched.heartbeat_timeout_ms,
                    heartbeat_details=state.heartbeat_details,
                )
            )

    def _end_attempt(self, run: RunState, state: ActivityState) -> None:
        for kind in ("schedule_to_start", "start_to_close", "heartbeat"):
            self._disarm(run, activity_timer_id(state.scheduled.seq, state.attempt, kind))

    def _close_activity(self, run: RunState, seq: int) -> ActivityState:
        state = run.activities[seq]
        self._end_attempt(run, state)
        self._disarm(run, f"activity:{seq}:schedule_to_close")
        self._disarm(run, f"retry:{seq}:{state.attempt + 1}")
        state.phase = Phase.CLOSED
        return state

    def _answer_waiters(self) -> None:
        still: list[GetWorkflowResult] = []
        for waiter in self._result_waiters:
            outcome = self._final_outcome(waiter.run_id, waiter.follow_runs)
            if outcome is None:
                still.append(waiter)
            elif isinstance(outcome, WorkflowOutcome):
                self._reply(waiter.reply_to, waiter.request_id, outcome)
        self._result_waiters = still

    # --- messages (live only) ------------------------------------------------------------

    def _dispatch(self, message: InboxMessage) -> None:
        match message:
            case StartWorkflow():
                self._on_start(message)
            case SignalWorkflow():
                self._on_signal(message)
            case CancelWorkflow():
                self._on_cancel(message)
            case TerminateWorkflow():
                run = self._target(message.run_id, open_only=True)
                if run is None:
                    self._reply(
                        message.reply_to,
                        message.request_id,
                        RequestFailed(not_found_failure(self.workflow_id, message.run_id)),
                    )
                    return
                self._record(WorkflowTerminated(message.reason, message.request_id), run.run_id)
                self._reply(message.reply_to, message.request_id, RequestAccepted())
            case QueryWorkflow():
                self._on_query(message)
            case UpdateWorkflow():
                self._on_update(message)
            case GetWorkflowResult():
                self._on_get_result(message)
            case DescribeWorkflow():
                run = self._target(message.run_id)
                body: ReplyBody = (
                    WorkflowDescription(self._status_record(run))
                    if run is not None
                    else RequestFailed(not_found_failure(self.workflow_id, message.run_id))
                )
                self._reply(message.reply_to, message.request_id, body)
            case FetchHistory():
                events = tuple(e for e in self._history if message.run_id in (None, e.run_id))
                self._reply(message.reply_to, message.request_id, HistoryPage(events))
            case (
                ActivityStartedReport()
                | ActivityHeartbeat()
                | ActivityCompletedReport()
                | ActivityFailedReport()
            ):
                self._on_activity_report(message)
            case TimerFiredReport():
                self._on_timer(message)
            case ChildStartedReport() | ChildStartFailedReport() | ChildClosedReport():
                self._on_child_report(message)

    def _target(self, run_id: str | None, *, open_only: bool = False) -> RunState | None:
        run = self._runs.get(run_id) if run_id else self._run
        if run is None or (open_only and run.closed):
            return None
        return run

    def _on_start(self, msg: StartWorkflow) -> None:
        if msg.request_id in self._start_requests:
            existing = self._start_requests[msg.request_id]
            self._reply(msg.reply_to, msg.request_id, StartAccepted(existing, created=False))
            return
        current = self._run
        if current is not None:
            policy = msg.id_reuse_policy
            refuse = False
            if not current.closed:
                if policy is IdReusePolicy.TERMINATE_IF_RUNNING:
                    self._record(
                        WorkflowTerminated("terminated by a new start", msg.request_id),
                        current.run_id,
                    )
                else:
                    refuse = True
            elif policy is IdReusePolicy.REJECT_DUPLICATE:
                refuse = True
            elif policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY:
                refuse = current.status not in _FAILED_STATUSES
            if refuse:
                failure = already_started_failure(self.workflow_id, current.run_id)
                if msg.parent is not None:
                    p = msg.parent
                    self._send(
                        ChildStartFailedReport(
                            p.workflow_id, p.run_id, p.seq, self.workflow_id, failure
                        )
                    )
                self._reply(msg.reply_to, msg.request_id, RequestFailed(failure))
                return
        run_id = derive_run_id(self.workflow_id, msg.request_id, self._last_event_id() + 1)
        started = WorkflowStarted(
            workflow_type=msg.workflow_type,
            task_queue=msg.task_queue,
            input=msg.input,
            request_id=msg.request_id,
            execution_timeout_ms=msg.execution_timeout_ms,
            run_timeout_ms=msg.run_timeout_ms,
            parent=msg.parent,
            first_run_id=run_id,
        )
        self._reply(msg.reply_to, msg.request_id, StartAccepted(run_id))
        if self.registry.get(msg.workflow_type) is None:
            # Recorded before failing so the failure is visible in history and status.
            self._fx_record_unknown(started, run_id)
            return
        self._record(started, run_id)

    def _fx_record_unknown(self, started: WorkflowStarted, run_id: str) -> None:
        self._record(started, run_id)
        known = ", ".join(self.registry.names()) or "none"
        self._record(
            WorkflowFailed(
                Failure(
                    f"workflow type {started.workflow_type!r} is not registered on task queue "
                    f"{started.task_queue!r} (registered: {known})",
                    type="WorkflowTypeNotFound",
                    non_retryable=True,
                )
            ),
            run_id,
        )

    def _on_signal(self, msg: SignalWorkflow) -> None:
        run = self._target(msg.run_id, open_only=True)
        if run is None:
            self._reply(
                msg.reply_to,
                msg.request_id,
                RequestFailed(not_found_failure(self.workflow_id, msg.run_id)),
            )
            return
        if msg.request_id not in run.signal_ids:
            self._record(SignalReceived(msg.signal_name, msg.input, msg.request_id), run.run_id)
        self._reply(msg.reply_to, msg.request_id, RequestAccepted())

    def _on_cancel(self, msg: CancelWorkflow) -> None:
        run = self._target(msg.run_id, open_only=True)
        if run is None:
            self._reply(
                msg.reply_to,
                msg.request_id,
                RequestFailed(not_found_failure(self.workflow_id, msg.run_id)),
            )
            return
        if not run.cancel_request_ids:
            self._record(WorkflowCancelRequested(msg.reason, msg.request_id), run.run_id)
        self._reply(msg.reply_to, msg.request_id, RequestAccepted())

    def _on_query(self, msg: QueryWorkflow) -> None:
        run = self._target(msg.run_id)
        if run is None:
            self._reply(
                msg.reply_to,
                msg.request_id,
                RequestFailed(not_found_failure(self.workflow_id, msg.run_id)),
            )
            return
        if run.code is None:
            if run.stuck is None:
                failure = Failure(f"workflow {self.workflow_id!r} has no code to answer queries")
                self._reply(msg.reply_to, msg.request_id, QueryAnswer(None, failure))
            return
        try:
            result = run.code.query(msg.query_name, msg.input)
        except Exception as exc:
            failure = failure_from_exception(exc, self.registry.converter.encode, with_stack=False)
            self._reply(msg.reply_to, msg.request_id, QueryAnswer(None, failure))
            return
        self._reply(msg.reply_to, msg.request_id, QueryAnswer(result, None))

    def _on_update(self, msg: UpdateWorkflow) -> None:
        run = self._target(msg.run_id, open_only=True)
        if run is None:
            self._reply(
                msg.reply_to,
                msg.request_id,
                RequestFailed(not_found_failure(self.workflow_id, msg.run_id)),
            )
            return
        if msg.update_id in run.updates:
            done = run.updates[msg.update_id]
            if done is not None:
                self._reply(
                    msg.reply_to,
                    msg.request_id,
                    UpdateOutcome(done.update_id, done.result, done.failure),
                )
            else:
                self._update_waiters.setdefault(msg.update_id, []).append(
                    (msg.reply_to, msg.request_id)
                )
            return
        if run.code is None:
            return
        rejection = run.code.validate_update(msg.update_name, msg.input)
        if rejection is not None:
            self._reply(msg.reply_to, msg.request_id, UpdateOutcome(msg.update_id, None, rejection))
            return
        self._update_waiters.setdefault(msg.update_id, []).append((msg.reply_to, msg.request_id))
        self._record(UpdateAccepted(msg.update_id, msg.update_name, msg.input), run.run_id)

    def _final_outcome(self, run_id: str | None, follow: bool) -> WorkflowOutcome | Failure | None:
        """The outcome to answer with; None while running; a Failure if unknown."""
        rid = run_id or (self._run.run_id if self._run else None)
        if rid is None or rid not in self._runs:
            return not_found_failure(self.workflow_id, run_id)
        while True:
            outcome = self._outcomes.get(rid)
            if outcome is None:
                return None
            if (
                follow
                and outcome.status is WorkflowStatus.CONTINUED_AS_NEW
                and rid in self._next_run
            ):
                rid = self._next_run[rid]
                continue
            return outcome

    def _on_get_result(self, msg: GetWorkflowResult) -> None:
        outcome = self._final_outcome(msg.run_id, msg.follow_runs)
        if outcome is None:
            self._result_waiters.append(msg)
        elif isinstance(outcome, Failure):
            self._reply(msg.reply_to, msg.request_id, RequestFailed(outcome))
        else:
            self._reply(msg.reply_to, msg.request_id, outcome)

    def _activity_for(
        self, run_id: str, seq: int, attempt: int
    ) -> tuple[RunState, ActivityState] | None:
        run = self._runs.get(run_id)
        if run is None or run.closed or run is not self._run:
            return None
        state = run.activities.get(seq)
        if state is None or state.attempt != attempt:
            return None
        if state.phase not in (Phase.SCHEDULED, Phase.STARTED):
            return None
        return run, state

    def _on_activity_report(
        self,
        msg: ActivityStartedReport
        | ActivityHeartbeat
        | ActivityCompletedReport
        | ActivityFailedReport,
    ) -> None:
        found = self._activity_for(msg.run_id, msg.seq, msg.attempt)
        if found is None:
            return  # a stale attempt, a closed run or a duplicate: normal, ignored
        run, state = found
        match msg:
            case ActivityStartedReport():
                if state.phase is Phase.SCHEDULED:
                    self._record(ActivityStarted(msg.seq, msg.attempt, msg.identity), run.run_id)
            case ActivityHeartbeat():
                self._record(
                    ActivityHeartbeatRecorded(msg.seq, msg.attempt, msg.details), run.run_id
                )
            case ActivityCompletedReport():
                self._record(ActivityCompleted(msg.seq, msg.attempt, msg.result), run.run_id)
            case ActivityFailedReport():
                self._attempt_failed(run, state, msg.failure)

    def _attempt_failed(self, run: RunState, state: ActivityState, failure: Failure) -> None:
        seq, attempt = state.scheduled.seq, state.attempt
        delay = next_attempt_delay_ms(state.scheduled.retry_policy, attempt, failure)
        s2c = state.scheduled.schedule_to_close_timeout_ms
        if delay is not None and s2c and self._now_ms + delay >= state.scheduled_time_ms + s2c:
            delay = None
        if delay is not None:
            self._record(ActivityAttemptFailed(seq, attempt, failure, delay), run.run_id)
        elif failure.kind == "timeout":
            self._record(ActivityTimedOut(seq, attempt, failure), run.run_id)
        else:
            self._record(ActivityFailed(seq, attempt, failure), run.run_id)

    def _on_timer(self, msg: TimerFiredReport) -> None:
        run = self._runs.get(msg.run_id)
        if run is None or run.closed:
            return
        deadline = run.deadlines.get(msg.timer_id)
        if deadline is None or msg.fire_at_ms < deadline:
            return  # fired already, cancelled, or superseded by a later deadline
        parts = msg.timer_id.split(":")
        if msg.timer_id == EXECUTION_TIMEOUT_TIMER:
            failure = Failure(
                "workflow execution timed out", kind="timeout", timeout_type="workflow_execution"
            )
            self._record(WorkflowTimedOut(failure), run.run_id)
        elif parts[0] == "sleep":
            self._record(TimerFired(int(parts[1])), run.run_id)
        elif parts[0] == "retry":
            self._record(ActivityRetryScheduled(int(parts[1]), int(parts[2])), run.run_id)
        elif parts[0] == "activity":
            self._on_activity_timeout(run, int(parts[1]), parts[-1])

    def _on_activity_timeout(self, run: RunState, seq: int, kind: str) -> None:
        state = run.activities[seq]
        failure = Failure(
            f"activity {kind.replace('_', '-')} timeout", kind="timeout", timeout_type=kind
        )
        if state.phase in (Phase.SCHEDULED, Phase.STARTED) and self._fx is not None:
            self._fx.tasks.append(
                CancelActivityTask(
                    self.workflow_id, run.run_id, seq, state.attempt, state.scheduled.task_queue
                )
            )
        if kind in ("schedule_to_close", "schedule_to_start"):
            self._record(ActivityTimedOut(seq, state.attempt, failure), run.run_id)
        else:
            self._attempt_failed(run, state, failure)

    def _on_child_report(
        self, msg: ChildStartedReport | ChildStartFailedReport | ChildClosedReport
    ) -> None:
        run = self._runs.get(msg.run_id)
        if run is None or run.closed:
            return
        child = run.children.get(msg.seq)
        if child is None or child.closed:
            return
        match msg:
            case ChildStartedReport():
                if child.run_id is None:
                    self._record(
                        ChildWorkflowStarted(msg.seq, msg.child_workflow_id, msg.child_run_id),
                        run.run_id,
                    )
            case ChildStartFailedReport():
                if child.run_id is None:
                    self._record(
                        ChildWorkflowStartFailed(msg.seq, msg.child_workflow_id, msg.failure),
                        run.run_id,
                    )
            case ChildClosedReport():
                if child.run_id is None:
                    self._record(
                        ChildWorkflowStarted(msg.seq, msg.child_workflow_id, msg.child_run_id),
                        run.run_id,
                    )
                    if child.closed or run.closed:
                        return
                if msg.failure is None:
                    self._record(
                        ChildWorkflowCompleted(
                            msg.seq, msg.child_workflow_id, msg.child_run_id, msg.result
                        ),
                        run.run_id,
                    )
                else:
                    self._record(
                        ChildWorkflowFailed(
                            msg.seq, msg.child_workflow_id, msg.child_run_id, msg.failure
                        ),
                        run.run_id,
                    )
