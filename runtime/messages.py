"""Everything that flows between processes besides the history itself.

- Inbox messages (``<ns>.inbox``, keyed by workflow id): what clients, activity workers,
  the timer service and other workflows ask of a workflow.
- Outbound records the workflow owner writes: activity tasks and their cancellations
  (``<ns>.tasks.<queue>``), durable timers (``<ns>.timers``), status (``<ns>.status``) and
  replies to clients (``<ns>.replies``).

The pure engine consumes inbox messages and produces outbound records as *effects*; the
Kafka worker and the in-memory test environment only carry them. Each class is one Avro
record of the same name in ``avro/`` (a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from runtime.events import HistoryEvent, ParentRef
from runtime.payloads import Failure, Payload


class IdReusePolicy(StrEnum):
    """What a start does when the workflow id already has a run (Temporal's names)."""

    ALLOW_DUPLICATE = "allow_duplicate"
    ALLOW_DUPLICATE_FAILED_ONLY = "allow_duplicate_failed_only"
    REJECT_DUPLICATE = "reject_duplicate"
    TERMINATE_IF_RUNNING = "terminate_if_running"


class WorkflowStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    CONTINUED_AS_NEW = "continued_as_new"
    TIMED_OUT = "timed_out"


# --- inbox: to a workflow ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartSignal:
    """The signal a start delivers: signal-with-start (`StartWorkflow.start_signal`)."""

    name: str
    input: tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class StartWorkflow:
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...]
    request_id: str
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    #: Client id to answer with a `StartAccepted`/`RequestFailed` reply (with `await_result`,
    #: a `WorkflowOutcome`/`RequestFailed`); None: no answer.
    reply_to: str | None = None
    parent: ParentRef | None = None
    execution_timeout_ms: int = 0
    run_timeout_ms: int = 0
    #: The starter wants the run's outcome, not the acceptance: `reply_to` is answered once,
    #: with the `WorkflowOutcome` when the run closes (following continue-as-new, like
    #: `GetWorkflowResult(follow_runs=True)`), or at once with `RequestFailed` when the start
    #: is refused. One inbox message and one reply instead of a start plus a result request;
    #: re-sending it is a safe re-ask, since a duplicate is answered like a result request.
    await_result: bool = False
    #: Signal-with-start: with an open run of the id, deliver this signal to it instead of
    #: starting one (answered with that run, ``created=False``); else start a run and
    #: deliver it as the run's first event after its start. Atomic: the owner decides, so
    #: two senders never both start, and no signal falls between a run's close and a start.
    start_signal: StartSignal | None = None


@dataclass(frozen=True, slots=True)
class SignalWorkflow:
    workflow_id: str
    run_id: str | None
    signal_name: str
    input: tuple[Payload, ...]
    request_id: str
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class CancelWorkflow:
    workflow_id: str
    run_id: str | None
    reason: str
    request_id: str
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class TerminateWorkflow:
    workflow_id: str
    run_id: str | None
    reason: str
    request_id: str
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class QueryWorkflow:
    workflow_id: str
    run_id: str | None
    query_name: str
    input: tuple[Payload, ...]
    request_id: str
    reply_to: str


@dataclass(frozen=True, slots=True)
class UpdateWorkflow:
    workflow_id: str
    run_id: str | None
    update_id: str
    update_name: str
    input: tuple[Payload, ...]
    request_id: str
    reply_to: str


@dataclass(frozen=True, slots=True)
class GetWorkflowResult:
    """Answer with the result once the run closes (at once if it already has).

    With ``follow_runs``, a run that continued-as-new is followed to the newest run.
    """

    workflow_id: str
    run_id: str | None
    request_id: str
    reply_to: str
    follow_runs: bool = True


@dataclass(frozen=True, slots=True)
class DescribeWorkflow:
    workflow_id: str
    run_id: str | None
    request_id: str
    reply_to: str


@dataclass(frozen=True, slots=True)
class FetchHistory:
    """One page of a history: the events after ``after_event_id`` that fit in a reply."""

    workflow_id: str
    run_id: str | None
    request_id: str
    reply_to: str
    after_event_id: int = 0


@dataclass(frozen=True, slots=True)
class ActivityStartedReport:
    workflow_id: str
    run_id: str
    seq: int
    attempt: int
    identity: str


@dataclass(frozen=True, slots=True)
class ActivityHeartbeat:
    workflow_id: str
    run_id: str
    seq: int
    attempt: int
    details: tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class ActivityCompletedReport:
    workflow_id: str
    run_id: str
    seq: int
    attempt: int
    result: Payload | None


@dataclass(frozen=True, slots=True)
class ActivityFailedReport:
    workflow_id: str
    run_id: str
    seq: int
    attempt: int
    failure: Failure


@dataclass(frozen=True, slots=True)
class TimerFiredReport:
    workflow_id: str
    run_id: str
    timer_id: str
    fire_at_ms: int


@dataclass(frozen=True, slots=True)
class ChildStartedReport:
    """To the parent: its child's start was accepted."""

    workflow_id: str
    run_id: str
    seq: int
    child_workflow_id: str
    child_run_id: str


@dataclass(frozen=True, slots=True)
class ChildStartFailedReport:
    workflow_id: str
    run_id: str
    seq: int
    child_workflow_id: str
    failure: Failure


@dataclass(frozen=True, slots=True)
class ChildClosedReport:
    """To the parent: its child closed. ``failure`` is None exactly when it completed."""

    workflow_id: str
    run_id: str
    seq: int
    child_workflow_id: str
    child_run_id: str
    result: Payload | None
    failure: Failure | None


InboxMessage = (
    StartWorkflow
    | SignalWorkflow
    | CancelWorkflow
    | TerminateWorkflow
    | QueryWorkflow
    | UpdateWorkflow
    | GetWorkflowResult
    | DescribeWorkflow
    | FetchHistory
    | ActivityStartedReport
    | ActivityHeartbeat
    | ActivityCompletedReport
    | ActivityFailedReport
    | TimerFiredReport
    | ChildStartedReport
    | ChildStartFailedReport
    | ChildClosedReport
)


def awaits_outcome(message: InboxMessage) -> bool:
    """Whether `message` is answered only when a run closes or an update completes, which
    may take any time: the asker waits without a timeout and re-asks meanwhile (the owner
    answers a repeat like the first; its waiters do not survive a restart)."""
    return isinstance(message, GetWorkflowResult | UpdateWorkflow) or (
        isinstance(message, StartWorkflow) and message.await_result
    )


# --- tasks: to activity workers --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivityTask:
    workflow_id: str
    run_id: str
    workflow_type: str
    seq: int
    attempt: int
    activity_type: str
    task_queue: str
    input: tuple[Payload, ...]
    scheduled_time_ms: int
    start_to_close_timeout_ms: int
    heartbeat_timeout_ms: int
    #: The last heartbeat details of the previous attempt, so an attempt can resume.
    heartbeat_details: tuple[Payload, ...] = ()
    #: The engine waits for an `ActivityStartedReport` (a schedule-to-start timeout is
    #: set); otherwise workers skip that message and its cost.
    report_start: bool = False
    #: When the schedule-to-close timeout ends the activity (epoch ms; 0: no such timeout):
    #: with start-to-close and the heartbeat timeout, what lets a worker free the slot of
    #: an attempt the workflow no longer waits for without hearing a cancellation.
    close_deadline_ms: int = 0
    #: When the activity was scheduled (its first attempt dispatched; `scheduled_time_ms`
    #: is this attempt's), and its schedule-to-close timeout (0: none): what
    #: `activity.info()` reports as Temporal's ``scheduled_time`` and
    #: ``schedule_to_close_timeout``. Records written before these fields carry 0.
    first_scheduled_time_ms: int = 0
    schedule_to_close_timeout_ms: int = 0

    @property
    def idempotency_key(self) -> str:
        """Same for every delivery of one attempt; side effects dedupe on it."""
        return f"{self.workflow_id}/{self.run_id}/{self.seq}/{self.attempt}"


@dataclass(frozen=True, slots=True)
class CancelActivityTask:
    """Stop an attempt: written with the task's key to every partition of its queue's topic
    (tasks go to any partition), so the worker that holds the task reads it."""

    workflow_id: str
    run_id: str
    seq: int
    attempt: int
    task_queue: str


TaskRecord = ActivityTask | CancelActivityTask

#: One attempt of one activity: what a task and its cancellation have in common.
AttemptKey = tuple[str, str, int, int]


def attempt_key(record: TaskRecord) -> AttemptKey:
    """The attempt a task, or the cancellation of one, is about."""
    return (record.workflow_id, record.run_id, record.seq, record.attempt)


# --- timers: to the timer service ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DurableTimer:
    """One pending timer; key ``{workflow_id, timer_id}``, tombstoned when fired or cancelled.

    ``timer_id`` is chosen by the engine and names what the timer is for (a user sleep,
    an activity timeout, a retry backoff), so a fire is routed without a lookup.
    """

    workflow_id: str
    run_id: str
    timer_id: str
    fire_at_ms: int


# --- status and replies --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The latest state of a workflow id; compacted, so a reader sees one per id."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowStatus
    start_time_ms: int
    close_time_ms: int | None
    history_length: int
    failure: Failure | None = None
    #: Set while the open run's workflow task is failing (its code cannot follow the
    #: history, or its type is not registered): the run waits for fixed code.
    task_failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class StartAccepted:
    run_id: str
    #: False when the start was a duplicate of an earlier request (same request id).
    created: bool = True


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request could not be served: unknown workflow, id already running, bad argument."""

    failure: Failure


@dataclass(frozen=True, slots=True)
class RequestAccepted:
    """Signal, cancel or terminate reached the run."""


@dataclass(frozen=True, slots=True)
class WorkflowOutcome:
    run_id: str
    status: WorkflowStatus
    result: Payload | None
    failure: Failure | None


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    result: Payload | None
    failure: Failure | None


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    update_id: str
    result: Payload | None
    failure: Failure | None


class PendingActivityState(StrEnum):
    """Where an activity that has not closed stands (Temporal's states)."""

    #: The attempt is on its task queue; no worker said it started it (a worker says so
    #: only when a schedule-to-start timeout waits for it).
    SCHEDULED = "scheduled"
    STARTED = "started"
    #: The last attempt failed; the next one is dispatched at ``next_attempt_time_ms``.
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class PendingActivity:
    """An activity the run waits on, with what its attempts went through so far.

    What an operator asks of a stuck workflow: which call, which attempt of how many,
    why the last one failed, when the next one runs, and when it last heartbeat.
    """

    seq: int
    activity_type: str
    task_queue: str
    state: PendingActivityState
    attempt: int
    #: From the retry policy; 0: unlimited.
    maximum_attempts: int
    #: When the activity was scheduled (its first attempt).
    scheduled_time_ms: int
    #: When the current attempt was dispatched (during a backoff: the failed one's).
    attempt_scheduled_time_ms: int
    #: When the schedule-to-close timeout ends it; None: no such timeout.
    expiration_time_ms: int | None = None
    last_started_time_ms: int | None = None
    last_heartbeat_time_ms: int | None = None
    #: The latest heartbeat's details: what the next attempt resumes from.
    heartbeat_details: tuple[Payload, ...] = ()
    #: Why the previous attempt failed, once one has.
    last_failure: Failure | None = None
    next_attempt_time_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A durable timer of the workflow code (``workflow.sleep``) that has not fired."""

    seq: int
    fire_at_ms: int


@dataclass(frozen=True, slots=True)
class PendingChild:
    """A child workflow the run started that has not closed; ``run_id`` once it started."""

    seq: int
    workflow_id: str
    workflow_type: str
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowDescription:
    """The run's status record and what it waits on (nothing once it closed)."""

    status: StatusRecord
    pending_activities: tuple[PendingActivity, ...] = ()
    pending_timers: tuple[PendingTimer, ...] = ()
    pending_children: tuple[PendingChild, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """``more``: later events did not fit in this reply's record; ask again after the last."""

    events: tuple[HistoryEvent, ...]
    more: bool = False


ReplyBody = (
    StartAccepted
    | RequestFailed
    | RequestAccepted
    | WorkflowOutcome
    | QueryAnswer
    | UpdateOutcome
    | WorkflowDescription
    | HistoryPage
)


@dataclass(frozen=True, slots=True)
class Reply:
    """One record of ``<ns>.replies``, keyed by the client id that asked."""

    client_id: str
    request_id: str
    workflow_id: str
    body: ReplyBody
