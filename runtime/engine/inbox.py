"""What each inbox message means: the events it records and the replies it earns.

Handlers decide; they never change run state themselves. Everything they want done is an
event recorded through `Execution.record`, so that replaying the history reproduces it.
Stale, duplicate or late messages (a second start, a report for an old attempt, a fire of
a cancelled timer) are answered from state or ignored, never recorded twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

from runtime.engine import activities
from runtime.engine.execution import Execution
from runtime.engine.ids import (
    EXECUTION_TIMEOUT_TIMER,
    derive_run_id,
    parse_timer_id,
    start_signal_id,
)
from runtime.engine.pending import describe_run
from runtime.engine.state import ActivityState, Phase, RunState
from runtime.errors import (
    TYPE_NOT_FOUND,
    already_started_failure,
    failure_from_exception,
    not_found_failure,
    unknown_signal_failure,
)
from runtime.events import (
    ActivityCompleted,
    ActivityHeartbeatRecorded,
    ActivityRetryScheduled,
    ActivityStarted,
    ActivityTimedOut,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    ChildWorkflowStartFailed,
    EventAttributes,
    SignalReceived,
    TimerFired,
    UpdateAccepted,
    WorkflowCancelRequested,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityHeartbeat,
    ActivityStartedReport,
    CancelWorkflow,
    ChildClosedReport,
    ChildStartedReport,
    ChildStartFailedReport,
    DescribeWorkflow,
    FetchHistory,
    GetWorkflowResult,
    HistoryPage,
    IdReusePolicy,
    InboxMessage,
    QueryAnswer,
    QueryWorkflow,
    RequestAccepted,
    RequestFailed,
    SignalWorkflow,
    StartAccepted,
    StartWorkflow,
    TerminateWorkflow,
    TimerFiredReport,
    UpdateOutcome,
    UpdateWorkflow,
    WorkflowStatus,
)
from runtime.payloads import Failure

_FAILED_STATUSES = {
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
    WorkflowStatus.TERMINATED,
    WorkflowStatus.TIMED_OUT,
}

_log = structlog.get_logger("chronik.workflow")

ActivityReport = ActivityStartedReport | ActivityHeartbeat | ActivityCompletedReport
ChildReport = ChildStartedReport | ChildStartFailedReport | ChildClosedReport


def handle_message(ex: Execution, message: InboxMessage) -> None:
    handler = _HANDLERS.get(type(message))
    if handler is not None:
        handler(ex, message)


# --- client requests --------------------------------------------------------------------------


class _RunRequest(Protocol):
    """A client request aimed at one run (None: the current one)."""

    @property
    def run_id(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...
    @property
    def reply_to(self) -> str | None: ...


def _find_run(ex: Execution, msg: _RunRequest, *, open_only: bool) -> RunState | None:
    """The run `msg` targets; if there is none, the caller is told so here."""
    run = ex.runs.target(msg.run_id, open_only=open_only)
    if run is None:
        closed = ex.runs.target(msg.run_id)
        failure = not_found_failure(
            ex.workflow_id, msg.run_id, closed_as=closed.status.value if closed else None
        )
        ex.fx.reply(msg.reply_to, msg.request_id, RequestFailed(failure))
    return run


def _accept(
    ex: Execution,
    msg: _RunRequest,
    event_for: Callable[[RunState], EventAttributes | None],
    seen: Callable[[RunState], bool],
) -> None:
    """Record what a request to an open run implies (None: seen already), then accept it.

    A request the run has taken already (``seen``: the same request id) is accepted again
    even once the run closed: that is a client's retry after its first answer was lost,
    and answering "closed" would tell it the signal, cancel or terminate did not happen.
    """
    if _taken_already(ex, msg, seen):
        return
    run = _find_run(ex, msg, open_only=True)
    if run is None:
        return
    event = event_for(run)
    if event is not None:
        ex.record(event, run.run_id)
    ex.fx.reply(msg.reply_to, msg.request_id, RequestAccepted())


def _taken_already(ex: Execution, msg: _RunRequest, seen: Callable[[RunState], bool]) -> bool:
    """Whether a run took this very request: then it is answered as accepted again, and
    nothing more happens.

    A request aimed at the current run (no run id) is looked for in every run: the run
    that took it may since have continued as new, or been followed by a new start of the
    id, and the retry must not reach that next run a second time (request ids are unique
    per request, so a match elsewhere is this very request). An empty id (another
    producer's) names nothing but the targeted run.
    """
    if msg.run_id or not msg.request_id:
        taken = ex.runs.target(msg.run_id)
        candidates = [] if taken is None else [taken]
    else:
        candidates = ex.runs.all()
    if not any(seen(run) for run in candidates):
        return False
    ex.fx.reply(msg.reply_to, msg.request_id, RequestAccepted())
    return True


def _on_signal(ex: Execution, msg: SignalWorkflow) -> None:
    """Record the signal, or refuse it when the run's code has no handler of that name.

    Temporal accepts such a signal and buffers it until the code registers a handler
    dynamically; Chronik's handlers are declared on the class and nothing can register
    one later, so a signal without a handler could never be delivered. Recording it
    anyway told the sender "accepted" for a typo, and a later deploy adding a handler of
    that name would have delivered it on replay, where the recorded run never saw it.
    A run whose type this worker does not know (its task fails) still records it: code
    that has the type will deliver it.
    """
    if _taken_already(ex, msg, lambda run: msg.request_id in run.signal_ids):
        return
    run = _find_run(ex, msg, open_only=True)
    if run is None:
        return
    if _refused_without_handler(ex, msg, run.workflow_type, msg.signal_name, run.run_id):
        return
    ex.record(SignalReceived(msg.signal_name, msg.input, msg.request_id), run.run_id)
    ex.fx.reply(msg.reply_to, msg.request_id, RequestAccepted())


def _refused_without_handler(
    ex: Execution,
    msg: SignalWorkflow | StartWorkflow,
    workflow_type: str,
    name: str,
    run_id: str | None,
) -> bool:
    """Whether ``workflow_type``'s code has no handler for signal ``name``: then the
    sender is told, and nothing is recorded (`_on_signal` says why). A type this worker
    does not know is let through."""
    definition = ex.registry.get(workflow_type)
    if definition is None or name in definition.signals:
        return False
    failure = unknown_signal_failure(ex.workflow_id, workflow_type, name, definition.signals)
    _log.warning(
        "signal without handler refused",
        workflow_id=ex.workflow_id,
        run_id=run_id,
        signal=name,
        sender=msg.reply_to or msg.request_id,
    )
    ex.fx.reply(msg.reply_to, msg.request_id, RequestFailed(failure))
    return True


def _on_cancel(ex: Execution, msg: CancelWorkflow) -> None:
    def requested(run: RunState) -> WorkflowCancelRequested | None:
        # Only the first cancel request counts; the code has been told already.
        if run.cancel_request_ids:
            return None
        return WorkflowCancelRequested(msg.reason, msg.request_id)

    _accept(ex, msg, requested, lambda run: msg.request_id in run.cancel_request_ids)


def _on_terminate(ex: Execution, msg: TerminateWorkflow) -> None:
    _accept(
        ex,
        msg,
        lambda run: WorkflowTerminated(msg.reason, msg.request_id),
        lambda run: run.terminate_request_id == msg.request_id,
    )


def _on_start(ex: Execution, msg: StartWorkflow) -> None:
    existing = ex.runs.started_by(msg.request_id)
    if existing is not None:
        _answer_duplicate_start(ex, msg, existing)
        return
    if msg.start_signal is not None and _signalled_instead(ex, msg):
        return
    current = ex.runs.current
    if current is not None and _refuses_start(ex, current, msg):
        _refuse_start(ex, msg, current.run_id)
        return
    run_id = derive_run_id(ex.workflow_id, msg.request_id, ex.next_event_id())
    if not msg.await_result:
        ex.fx.reply(msg.reply_to, msg.request_id, StartAccepted(run_id))
    _record_start(ex, msg, run_id)
    if msg.await_result:
        # After the events: a run that closed within this message is answered at once.
        _answer_with_outcome(ex, msg, run_id)


def _signalled_instead(ex: Execution, msg: StartWorkflow) -> bool:
    """Signal-with-start's other outcomes than a start, decided before any (True: done).

    A retry of a signal-with-start that signalled a run is answered with that run, and an
    open run takes the signal — unless the reuse policy terminates it for a new start.
    The signal must have a handler in the code of the run that gets it — the open run's
    type, or the start's — or nothing happens (`_refused_without_handler`).
    """
    assert msg.start_signal is not None
    name = msg.start_signal.name
    signal_id = start_signal_id(msg.request_id)
    signalled = next((r for r in ex.runs.all() if signal_id in r.signal_ids), None)
    if signalled is not None:
        _answer_duplicate_start(ex, msg, signalled.run_id)
        return True
    current = ex.runs.current
    if (
        current is None
        or current.closed
        or msg.id_reuse_policy is IdReusePolicy.TERMINATE_IF_RUNNING
    ):
        return _refused_without_handler(ex, msg, msg.workflow_type, name, None)
    if _refused_without_handler(ex, msg, current.workflow_type, name, current.run_id):
        return True
    ex.record(SignalReceived(name, msg.start_signal.input, signal_id), current.run_id)
    _answer_duplicate_start(ex, msg, current.run_id)
    return True


def _refuse_start(ex: Execution, msg: StartWorkflow, current_run_id: str) -> None:
    """The id reuse policy said no: tell the starter (and a parent, for a child start)."""
    failure = already_started_failure(ex.workflow_id, current_run_id)
    if msg.parent is not None:
        p = msg.parent
        ex.fx.send(ChildStartFailedReport(p.workflow_id, p.run_id, p.seq, ex.workflow_id, failure))
    ex.fx.reply(msg.reply_to, msg.request_id, RequestFailed(failure))


def _record_start(ex: Execution, msg: StartWorkflow, run_id: str) -> None:
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
    known = ex.registry.get(msg.workflow_type) is not None
    signal = msg.start_signal if known else None
    # A start signal is the run's next event, delivered before its code first runs (as
    # in Temporal, the handler before the run method): `start_signal_follows` on replay.
    ex.record(started, run_id, drive=signal is None)
    if signal is not None:
        request_id = start_signal_id(msg.request_id)
        ex.record(SignalReceived(signal.name, signal.input, request_id), run_id)
    if not known:
        # Recorded as started, then failed, so the failure is visible in history and status.
        ex.record(WorkflowFailed(_unknown_type_failure(ex, started)), run_id)


def _answer_duplicate_start(ex: Execution, msg: StartWorkflow, run_id: str) -> None:
    """A start seen before: name the run it started, or, if awaited, answer with its outcome.

    Answering an awaiting duplicate like a result request is what lets a client re-send
    the very same start to re-ask for the outcome (a worker's waiters live in memory).
    """
    if msg.await_result:
        _answer_with_outcome(ex, msg, run_id)
    else:
        ex.fx.reply(msg.reply_to, msg.request_id, StartAccepted(run_id, created=False))


def _answer_with_outcome(ex: Execution, msg: StartWorkflow, run_id: str) -> None:
    """Treat an awaiting start as a result request for the run it started."""
    if msg.reply_to is None:
        return  # nobody asked: no waiter to keep
    request = GetWorkflowResult(
        ex.workflow_id, run_id, msg.request_id, msg.reply_to, follow_runs=True
    )
    _on_get_result(ex, request)


def _refuses_start(ex: Execution, current: RunState, msg: StartWorkflow) -> bool:
    """Apply the id reuse policy; terminating a running run is part of saying yes."""
    policy = msg.id_reuse_policy
    if not current.closed:
        if policy is not IdReusePolicy.TERMINATE_IF_RUNNING:
            return True
        ex.record(WorkflowTerminated("terminated by a new start", msg.request_id), current.run_id)
        return False
    if policy is IdReusePolicy.REJECT_DUPLICATE:
        return True
    if policy is IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY:
        return current.status not in _FAILED_STATUSES
    return False


def _unknown_type_failure(ex: Execution, started: WorkflowStarted) -> Failure:
    known = ", ".join(ex.registry.names()) or "none"
    return Failure(
        # Workflow types are not per task queue: the owner of the workflow id's partition
        # runs it, so every workflow worker of the namespace must have every type.
        f"workflow type {started.workflow_type!r} (task queue {started.task_queue!r}) is "
        f"not registered with the workflow worker that owns {ex.workflow_id!r} "
        f"(registered: {known})",
        type=TYPE_NOT_FOUND,
        non_retryable=True,
    )


def _on_query(ex: Execution, msg: QueryWorkflow) -> None:
    run = _find_run(ex, msg, open_only=False)
    if run is None:
        return
    if run.code is None:
        # A run whose task failed has no code to ask: say why, rather than leave the
        # caller to time out as if no worker ran (code that can replay it will answer).
        reason = f"its workflow task failed: {run.stuck}" if run.stuck else "it has no code"
        failure = Failure(f"workflow {ex.workflow_id!r} cannot answer queries: {reason}")
        ex.fx.reply(msg.reply_to, msg.request_id, QueryAnswer(None, failure))
        return
    try:
        result = run.code.query(msg.query_name, msg.input)
    except Exception as exc:
        failure = failure_from_exception(exc, ex.registry.converter.encode, with_stack=False)
        ex.fx.reply(msg.reply_to, msg.request_id, QueryAnswer(None, failure))
        return
    ex.fx.reply(msg.reply_to, msg.request_id, QueryAnswer(result, None))


def _on_update(ex: Execution, msg: UpdateWorkflow) -> None:
    # A re-ask of a completed update is answered from history, even once its run closed:
    # the update did happen (its caller re-asks when a worker restart lost its waiter).
    known = ex.runs.target(msg.run_id, open_only=False)
    done = known.updates.get(msg.update_id) if known is not None else None
    if done is not None:
        outcome = UpdateOutcome(done.update_id, done.result, done.failure)
        ex.fx.reply(msg.reply_to, msg.request_id, outcome)
        return
    run = _find_run(ex, msg, open_only=True)
    if run is None:
        return
    if msg.update_id in run.updates:  # accepted, still running
        ex.waiters.await_update(msg.update_id, msg.reply_to, msg.request_id, ex.now_ms)
        return
    if run.code is None:
        # A run stuck on non-determinism stays silent: fixed code will run the update.
        if run.stuck is None:
            failure = Failure(f"workflow {ex.workflow_id!r} has no code to run updates")
            ex.fx.reply(msg.reply_to, msg.request_id, UpdateOutcome(msg.update_id, None, failure))
        return
    rejection = run.code.validate_update(msg.update_name, msg.input)
    if rejection is not None:
        ex.fx.reply(msg.reply_to, msg.request_id, UpdateOutcome(msg.update_id, None, rejection))
        return
    ex.waiters.await_update(msg.update_id, msg.reply_to, msg.request_id, ex.now_ms)
    ex.record(UpdateAccepted(msg.update_id, msg.update_name, msg.input), run.run_id)


def _on_get_result(ex: Execution, msg: GetWorkflowResult) -> None:
    outcome = ex.runs.final_outcome(msg.run_id, msg.follow_runs)
    if outcome is None:
        ex.waiters.await_result(msg, ex.now_ms)
    elif isinstance(outcome, Failure):
        ex.fx.reply(msg.reply_to, msg.request_id, RequestFailed(outcome))
    else:
        ex.fx.reply(msg.reply_to, msg.request_id, outcome)


def _on_describe(ex: Execution, msg: DescribeWorkflow) -> None:
    run = _find_run(ex, msg, open_only=False)
    if run is not None:
        ex.fx.reply(msg.reply_to, msg.request_id, describe_run(ex.status_record(run), run))


def _on_fetch_history(ex: Execution, msg: FetchHistory) -> None:
    if not ex.history or (msg.run_id is not None and ex.runs.target(msg.run_id) is None):
        failure = not_found_failure(ex.workflow_id, msg.run_id)
        ex.fx.reply(msg.reply_to, msg.request_id, RequestFailed(failure))
        return
    events = tuple(
        e for e in ex.history if e.event_id > msg.after_event_id and msg.run_id in (None, e.run_id)
    )
    ex.fx.reply(msg.reply_to, msg.request_id, HistoryPage(events))


# --- reports from activity workers, the timer service and children ----------------------------


def _current_attempt(
    ex: Execution, run_id: str, seq: int, attempt: int
) -> tuple[RunState, ActivityState] | None:
    """The activity a report is about, if the report is about its current, open attempt."""
    run = ex.runs.get(run_id)
    if run is None or run.closed or run is not ex.runs.current:
        return None
    state = run.activities.get(seq)
    if state is None or state.attempt != attempt:
        return None
    if state.phase not in (Phase.SCHEDULED, Phase.STARTED):
        return None
    return run, state


def _on_activity_report(ex: Execution, msg: ActivityReport | ActivityFailedReport) -> None:
    found = _current_attempt(ex, msg.run_id, msg.seq, msg.attempt)
    if found is None:
        return  # a stale attempt, a closed run or a duplicate: normal, ignored
    run, state = found
    match msg:
        case ActivityStartedReport():
            if state.phase is Phase.SCHEDULED:
                ex.record(ActivityStarted(msg.seq, msg.attempt, msg.identity), run.run_id)
        case ActivityHeartbeat():
            ex.record(ActivityHeartbeatRecorded(msg.seq, msg.attempt, msg.details), run.run_id)
        case ActivityCompletedReport():
            ex.record(ActivityCompleted(msg.seq, msg.attempt, msg.result), run.run_id)
        case ActivityFailedReport():
            ex.record(activities.after_failure(state, msg.failure, ex.now_ms), run.run_id)


def _on_timer(ex: Execution, msg: TimerFiredReport) -> None:
    run = ex.runs.get(msg.run_id)
    if run is None or run.closed:
        return
    deadline = run.deadlines.get(msg.timer_id)
    if deadline is None or msg.fire_at_ms < deadline:
        return  # fired already, cancelled, or superseded by a later deadline
    if msg.timer_id == EXECUTION_TIMEOUT_TIMER:
        failure = Failure(
            "workflow execution timed out", kind="timeout", timeout_type="workflow_execution"
        )
        ex.record(WorkflowTimedOut(failure), run.run_id)
        return
    timer = parse_timer_id(msg.timer_id)
    match timer.family:
        case "sleep":
            ex.record(TimerFired(timer.seq), run.run_id)
        case "retry":
            ex.record(ActivityRetryScheduled(timer.seq, timer.attempt), run.run_id)
        case "activity":
            _on_activity_timeout(ex, run, timer.seq, timer.kind)


def _on_activity_timeout(ex: Execution, run: RunState, seq: int, kind: str) -> None:
    state = run.activities[seq]
    failure = activities.timeout_failure(kind)
    ex.fx.cancel_attempt(run, state)
    if kind in activities.FINAL_TIMEOUTS:
        ex.record(ActivityTimedOut(seq, state.attempt, failure), run.run_id)
    else:
        ex.record(activities.after_failure(state, failure, ex.now_ms), run.run_id)


def _on_child_report(ex: Execution, msg: ChildReport) -> None:
    run = ex.runs.get(msg.run_id)
    if run is None or run.closed:
        return
    child = run.children.get(msg.seq)
    if child is None or child.closed:
        return
    if child.run_id is None:
        # The first report of a child records its start; a close that overtook the start
        # report implies the start.
        match msg:
            case ChildStartFailedReport():
                started: EventAttributes = ChildWorkflowStartFailed(
                    msg.seq, msg.child_workflow_id, msg.failure
                )
            case _:
                started = ChildWorkflowStarted(msg.seq, msg.child_workflow_id, msg.child_run_id)
        ex.record(started, run.run_id)
        if child.closed or run.closed:
            return
    if not isinstance(msg, ChildClosedReport):
        return
    if msg.failure is None:
        closed: EventAttributes = ChildWorkflowCompleted(
            msg.seq, msg.child_workflow_id, msg.child_run_id, msg.result
        )
    else:
        closed = ChildWorkflowFailed(msg.seq, msg.child_workflow_id, msg.child_run_id, msg.failure)
    ex.record(closed, run.run_id)


_HANDLERS: dict[type[InboxMessage], Callable[[Execution, Any], None]] = {
    StartWorkflow: _on_start,
    SignalWorkflow: _on_signal,
    CancelWorkflow: _on_cancel,
    TerminateWorkflow: _on_terminate,
    QueryWorkflow: _on_query,
    UpdateWorkflow: _on_update,
    GetWorkflowResult: _on_get_result,
    DescribeWorkflow: _on_describe,
    FetchHistory: _on_fetch_history,
    ActivityStartedReport: _on_activity_report,
    ActivityHeartbeat: _on_activity_report,
    ActivityCompletedReport: _on_activity_report,
    ActivityFailedReport: _on_activity_report,
    TimerFiredReport: _on_timer,
    ChildStartedReport: _on_child_report,
    ChildStartFailedReport: _on_child_report,
    ChildClosedReport: _on_child_report,
}
