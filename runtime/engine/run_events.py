"""How each history event changes the run it belongs to: one applier per event type.

Appliers run live and on replay alike, so they may only read the event and the run; what
they emit goes through `Effects`, which drops it on replay. They also feed the code side
(`run.code`, absent when the code is detached) the resolutions it waits for. What an event
means for the instance as a whole (a new run, a closed run's waiters) is the instance's
business, not theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.engine import activities
from runtime.engine.effects import Effects
from runtime.engine.ids import sleep_timer_id
from runtime.engine.state import ChildState, EventClass, Phase, RunState, classify
from runtime.errors import NonDeterminismError
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
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from runtime.messages import (
    CancelWorkflow,
    ChildClosedReport,
    SignalWorkflow,
    StartWorkflow,
    WorkflowStatus,
)
from runtime.payloads import Failure

_CLOSED_STATUS = {
    WorkflowCompleted: WorkflowStatus.COMPLETED,
    WorkflowFailed: WorkflowStatus.FAILED,
    WorkflowCancelled: WorkflowStatus.CANCELLED,
    WorkflowTerminated: WorkflowStatus.TERMINATED,
    WorkflowTimedOut: WorkflowStatus.TIMED_OUT,
    WorkflowContinuedAsNew: WorkflowStatus.CONTINUED_AS_NEW,
}


def closed_status(attrs: object) -> WorkflowStatus | None:
    """The status a run has once ``attrs`` (an event's attributes) closed it; None if they
    close nothing."""
    return _CLOSED_STATUS.get(type(attrs))


#: attrs is typed per applier; the table is keyed by that very type.
_Applier = Callable[[Effects, RunState, Any, int], None]


def apply_to_run(fx: Effects, run: RunState, event: HistoryEvent) -> None:
    """Apply any event but `WorkflowStarted` (which creates the run) to `run`."""
    attrs = event.attributes
    if run.code is not None and classify(attrs) is EventClass.WAKE:
        run.code.now_ms = event.timestamp_ms
    if isinstance(attrs, UpdateAccepted):  # the one applier that may name the event
        _update_accepted(run, attrs, event.event_id)
        return
    applier = _APPLIERS.get(type(attrs))
    if applier is not None:
        applier(fx, run, attrs, event.timestamp_ms)


# --- the run itself -------------------------------------------------------------------------


def _closed(fx: Effects, run: RunState, attrs: EventAttributes, ts: int) -> None:
    """The run is over: every deadline, attempt and the parent's wait end with it."""
    run.status = _CLOSED_STATUS[type(attrs)]
    run.close_time_ms = ts
    match attrs:
        case WorkflowCompleted(result=result):
            run.result = result
        case WorkflowFailed(failure=f) | WorkflowCancelled(failure=f) | WorkflowTimedOut(failure=f):
            run.failure = f
        case WorkflowTerminated(reason=reason, request_id=request_id):
            run.failure = Failure(reason or "terminated", kind="terminated")
            run.terminate_request_id = request_id
        case _:
            pass
    for timer_id in list(run.deadlines):
        fx.disarm(run, timer_id)
    for state in run.activities.values():
        fx.cancel_attempt(run, state)
        state.phase = Phase.CLOSED
    if run.code is not None and not isinstance(attrs, WorkflowCompleted | WorkflowFailed):
        run.code.closed = True
    parent = run.started.parent
    if parent is not None and not isinstance(attrs, WorkflowContinuedAsNew):
        fx.send(
            ChildClosedReport(
                parent.workflow_id,
                parent.run_id,
                parent.seq,
                fx.workflow_id,
                run.run_id,
                run.result,
                None if run.status is WorkflowStatus.COMPLETED else run.failure,
            )
        )


def _cancel_requested(fx: Effects, run: RunState, attrs: WorkflowCancelRequested, ts: int) -> None:
    run.cancel_request_ids.add(attrs.request_id)
    if run.code is not None:
        run.code.request_cancel()


def _task_failed(fx: Effects, run: RunState, attrs: WorkflowTaskFailed, ts: int) -> None:
    # Up to the next recorded command the code may issue commands the history lacks
    # (fixed code deployed; the stuck run recorded wakes without running code).
    run.lenient = True
    if run.stuck is not None:
        run.stuck_recorded = True


def _signal(fx: Effects, run: RunState, attrs: SignalReceived, ts: int) -> None:
    run.signal_ids.add(attrs.request_id)
    if run.code is not None:
        run.code.deliver_signal(attrs.signal_name, attrs.input)


def _update_accepted(run: RunState, attrs: UpdateAccepted, event_id: int) -> None:
    run.updates[attrs.update_id] = None
    if run.code is not None and not run.code.start_update(
        attrs.update_id, attrs.update_name, attrs.input
    ):
        # Accepted by earlier code; this code has no such handler: it cannot go on with
        # this run (the task fails; code with the handler resumes it).
        run.detach_code(
            NonDeterminismError(
                event_id,
                f"UpdateAccepted({attrs.update_name!r})",
                f"code without an update handler {attrs.update_name!r}",
            )
        )


def _update_completed(fx: Effects, run: RunState, attrs: UpdateCompleted, ts: int) -> None:
    run.updates[attrs.update_id] = attrs


# --- activities -------------------------------------------------------------------------------


def _activity_started(fx: Effects, run: RunState, attrs: ActivityStarted, ts: int) -> None:
    activities.started(fx, run, run.activities[attrs.seq], ts)


def _heartbeat(fx: Effects, run: RunState, attrs: ActivityHeartbeatRecorded, ts: int) -> None:
    activities.heartbeat(fx, run, run.activities[attrs.seq], attrs.details, ts)


def _attempt_failed(fx: Effects, run: RunState, attrs: ActivityAttemptFailed, ts: int) -> None:
    activities.back_off(fx, run, run.activities[attrs.seq], attrs, ts)


def _retry(fx: Effects, run: RunState, attrs: ActivityRetryScheduled, ts: int) -> None:
    activities.retry(fx, run, run.activities[attrs.seq], attrs.attempt, ts)


def _activity_completed(fx: Effects, run: RunState, attrs: ActivityCompleted, ts: int) -> None:
    activities.close(fx, run, attrs.seq)
    if run.code is not None:
        run.code.resolve_activity(attrs.seq, attrs.result, None)


def _activity_failed(
    fx: Effects, run: RunState, attrs: ActivityFailed | ActivityTimedOut, ts: int
) -> None:
    state = activities.close(fx, run, attrs.seq)
    code = run.code
    if code is not None:
        error = code.activity_error(attrs.seq, state.scheduled.activity_type, attrs.failure)
        code.resolve_activity(attrs.seq, None, error)


def _activity_cancel_requested(
    fx: Effects, run: RunState, attrs: ActivityCancelRequested, ts: int
) -> None:
    fx.cancel_attempt(run, run.activities[attrs.seq])
    activities.close(fx, run, attrs.seq)


# --- timers -----------------------------------------------------------------------------------


def _timer_started(fx: Effects, run: RunState, attrs: TimerStarted, ts: int) -> None:
    run.timers[attrs.seq] = attrs.fire_at_ms
    fx.arm(run, sleep_timer_id(attrs.seq), attrs.fire_at_ms)


def _timer_fired(fx: Effects, run: RunState, attrs: TimerFired, ts: int) -> None:
    run.timers.pop(attrs.seq, None)
    # The timer service dropped it by firing it: nothing to tombstone.
    run.deadlines.pop(sleep_timer_id(attrs.seq), None)
    if run.code is not None:
        run.code.fire_timer(attrs.seq)


def _timer_cancelled(fx: Effects, run: RunState, attrs: TimerCancelled, ts: int) -> None:
    run.timers.pop(attrs.seq, None)
    fx.disarm(run, sleep_timer_id(attrs.seq))


# --- children and other workflows -------------------------------------------------------------


def _child_initiated(fx: Effects, run: RunState, attrs: ChildWorkflowInitiated, ts: int) -> None:
    run.children[attrs.seq] = ChildState(attrs.workflow_id, attrs.workflow_type)
    fx.send(
        StartWorkflow(
            workflow_id=attrs.workflow_id,
            workflow_type=attrs.workflow_type,
            task_queue=attrs.task_queue,
            input=attrs.input,
            request_id=f"{run.run_id}/child/{attrs.seq}",
            parent=ParentRef(fx.workflow_id, run.run_id, attrs.seq),
            execution_timeout_ms=attrs.execution_timeout_ms,
        )
    )


def _child_started(fx: Effects, run: RunState, attrs: ChildWorkflowStarted, ts: int) -> None:
    run.children[attrs.seq].run_id = attrs.run_id
    if run.code is not None:
        run.code.child_started(attrs.seq, attrs.run_id)


def _child_failed(
    fx: Effects, run: RunState, attrs: ChildWorkflowStartFailed | ChildWorkflowFailed, ts: int
) -> None:
    run.children[attrs.seq].closed = True
    if run.code is not None:
        run.code.child_closed(attrs.seq, None, attrs.failure)


def _child_completed(fx: Effects, run: RunState, attrs: ChildWorkflowCompleted, ts: int) -> None:
    run.children[attrs.seq].closed = True
    if run.code is not None:
        run.code.child_closed(attrs.seq, attrs.result, None)


def _child_cancel_requested(
    fx: Effects, run: RunState, attrs: ChildWorkflowCancelRequested, ts: int
) -> None:
    child = run.children[attrs.seq]
    fx.send(
        CancelWorkflow(
            child.workflow_id,
            child.run_id,
            "parent cancelled",
            f"{run.run_id}/cancel-child/{attrs.seq}",
        )
    )


def _external_signal(fx: Effects, run: RunState, attrs: ExternalSignalSent, ts: int) -> None:
    fx.send(
        SignalWorkflow(
            attrs.workflow_id,
            None,
            attrs.signal_name,
            attrs.input,
            f"{run.run_id}/signal/{attrs.seq}",
        )
    )


def _nothing(fx: Effects, run: RunState, attrs: EventAttributes, ts: int) -> None:
    """Recorded for the history's sake only (the marker's value is read by the code)."""


_APPLIERS: dict[type[EventAttributes], _Applier] = {
    **dict.fromkeys(_CLOSED_STATUS, _closed),
    WorkflowCancelRequested: _cancel_requested,
    WorkflowTaskFailed: _task_failed,
    SignalReceived: _signal,
    UpdateCompleted: _update_completed,
    ActivityScheduled: activities.schedule,
    ActivityStarted: _activity_started,
    ActivityHeartbeatRecorded: _heartbeat,
    ActivityAttemptFailed: _attempt_failed,
    ActivityRetryScheduled: _retry,
    ActivityCompleted: _activity_completed,
    ActivityFailed: _activity_failed,
    ActivityTimedOut: _activity_failed,
    ActivityCancelRequested: _activity_cancel_requested,
    ActivityCancelled: _nothing,
    TimerStarted: _timer_started,
    TimerFired: _timer_fired,
    TimerCancelled: _timer_cancelled,
    ChildWorkflowInitiated: _child_initiated,
    ChildWorkflowStarted: _child_started,
    ChildWorkflowStartFailed: _child_failed,
    ChildWorkflowFailed: _child_failed,
    ChildWorkflowCompleted: _child_completed,
    ChildWorkflowCancelRequested: _child_cancel_requested,
    ExternalSignalSent: _external_signal,
    MarkerRecorded: _nothing,
}
