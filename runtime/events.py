"""The history: every fact about a workflow run, in the order it became true.

A history is the only durable state of a workflow. Replaying it through the engine
against the workflow code brings the coroutine back to where it was. Each class here
is one Avro record in ``avro/history_event.avsc`` with the same name and fields (a test
keeps the two in step); the Avro schema is the contract for other languages.

Conventions:
- ``seq`` numbers the commands a run issued (activities, timers, children, markers,
  external signals) in the order its code issued them, one counter per kind. Replay
  matches commands to recorded events by kind and ``seq``.
- Times are integer milliseconds since the Unix epoch (``*_ms``), durations integer
  milliseconds; 0 or ``None`` means "not set".
- ``event_id`` counts from 1 per workflow id and keeps counting across runs (continue-as-new
  and id reuse), so the history key ``{workflow_id, event_id}`` never repeats before GC.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.payloads import Failure, Payload


@dataclass(frozen=True, slots=True)
class RetryPolicyRecord:
    """A retry policy as stored; `runtime.retry.RetryPolicy` is the user-facing form."""

    initial_interval_ms: int
    backoff_coefficient: float
    maximum_interval_ms: int
    maximum_attempts: int
    non_retryable_error_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParentRef:
    """Where a child run reports when it closes."""

    workflow_id: str
    run_id: str
    seq: int


# --- workflow run lifecycle ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowStarted:
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...]
    request_id: str
    execution_timeout_ms: int = 0
    run_timeout_ms: int = 0
    parent: ParentRef | None = None
    continued_from_run_id: str | None = None
    #: The first run of a chain of continue-as-new runs; equal to the run id for a fresh start.
    first_run_id: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowCompleted:
    result: Payload | None


@dataclass(frozen=True, slots=True)
class WorkflowFailed:
    failure: Failure


@dataclass(frozen=True, slots=True)
class WorkflowTimedOut:
    failure: Failure


@dataclass(frozen=True, slots=True)
class WorkflowCancelRequested:
    reason: str
    request_id: str


@dataclass(frozen=True, slots=True)
class WorkflowCancelled:
    failure: Failure


@dataclass(frozen=True, slots=True)
class WorkflowTerminated:
    reason: str
    request_id: str


@dataclass(frozen=True, slots=True)
class WorkflowContinuedAsNew:
    new_run_id: str
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class WorkflowTaskFailed:
    """Workflow code could not make progress (non-determinism, a bug in a query-free path).

    The run stays open: the next message, or a deploy of fixed code, retries the task.
    Replay skips these events; they exist for visibility.
    """

    failure: Failure


# --- signals and updates ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalReceived:
    signal_name: str
    input: tuple[Payload, ...]
    request_id: str


@dataclass(frozen=True, slots=True)
class UpdateAccepted:
    update_id: str
    update_name: str
    input: tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class UpdateCompleted:
    update_id: str
    result: Payload | None
    failure: Failure | None


# --- activities -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivityScheduled:
    seq: int
    activity_type: str
    task_queue: str
    input: tuple[Payload, ...]
    schedule_to_close_timeout_ms: int
    schedule_to_start_timeout_ms: int
    start_to_close_timeout_ms: int
    heartbeat_timeout_ms: int
    retry_policy: RetryPolicyRecord | None


@dataclass(frozen=True, slots=True)
class ActivityStarted:
    seq: int
    attempt: int
    identity: str


@dataclass(frozen=True, slots=True)
class ActivityHeartbeatRecorded:
    seq: int
    attempt: int
    details: tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class ActivityAttemptFailed:
    """One attempt failed (or timed out) and the retry policy grants another after a backoff."""

    seq: int
    attempt: int
    failure: Failure
    next_attempt_delay_ms: int


@dataclass(frozen=True, slots=True)
class ActivityRetryScheduled:
    """The backoff of a failed attempt elapsed: attempt ``attempt`` was dispatched."""

    seq: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ActivityCompleted:
    seq: int
    attempt: int
    result: Payload | None


@dataclass(frozen=True, slots=True)
class ActivityFailed:
    """The activity failed for good: the retry policy is exhausted or the error is final."""

    seq: int
    attempt: int
    failure: Failure


@dataclass(frozen=True, slots=True)
class ActivityTimedOut:
    """A timeout ended the activity for good; ``failure.timeout_type`` says which."""

    seq: int
    attempt: int
    failure: Failure


@dataclass(frozen=True, slots=True)
class ActivityCancelRequested:
    seq: int


@dataclass(frozen=True, slots=True)
class ActivityCancelled:
    seq: int
    attempt: int


# --- timers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerStarted:
    seq: int
    duration_ms: int
    fire_at_ms: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    seq: int


@dataclass(frozen=True, slots=True)
class TimerCancelled:
    seq: int


# --- child workflows and other workflows ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildWorkflowInitiated:
    seq: int
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...]
    execution_timeout_ms: int = 0


@dataclass(frozen=True, slots=True)
class ChildWorkflowStarted:
    seq: int
    workflow_id: str
    run_id: str


@dataclass(frozen=True, slots=True)
class ChildWorkflowStartFailed:
    seq: int
    workflow_id: str
    failure: Failure


@dataclass(frozen=True, slots=True)
class ChildWorkflowCompleted:
    seq: int
    workflow_id: str
    run_id: str
    result: Payload | None


@dataclass(frozen=True, slots=True)
class ChildWorkflowFailed:
    """The child closed without a result: failed, cancelled, terminated or timed out."""

    seq: int
    workflow_id: str
    run_id: str
    failure: Failure


@dataclass(frozen=True, slots=True)
class ChildWorkflowCancelRequested:
    seq: int


@dataclass(frozen=True, slots=True)
class ExternalSignalSent:
    seq: int
    workflow_id: str
    signal_name: str
    input: tuple[Payload, ...]


# --- markers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarkerRecorded:
    """A recorded decision that replay must see again: ``patch`` (versioning), ``side_effect``."""

    seq: int
    name: str
    marker_id: str
    details: tuple[Payload, ...]


EventAttributes = (
    WorkflowStarted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowTimedOut
    | WorkflowCancelRequested
    | WorkflowCancelled
    | WorkflowTerminated
    | WorkflowContinuedAsNew
    | WorkflowTaskFailed
    | SignalReceived
    | UpdateAccepted
    | UpdateCompleted
    | ActivityScheduled
    | ActivityStarted
    | ActivityHeartbeatRecorded
    | ActivityAttemptFailed
    | ActivityRetryScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityTimedOut
    | ActivityCancelRequested
    | ActivityCancelled
    | TimerStarted
    | TimerFired
    | TimerCancelled
    | ChildWorkflowInitiated
    | ChildWorkflowStarted
    | ChildWorkflowStartFailed
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
    | ChildWorkflowCancelRequested
    | ExternalSignalSent
    | MarkerRecorded
)

#: Events that close a run: nothing may follow them in the same run.
CLOSING_EVENTS = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowTimedOut,
    WorkflowCancelled,
    WorkflowTerminated,
    WorkflowContinuedAsNew,
)


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One record of ``<ns>.history``; its key is ``{workflow_id, event_id}``."""

    workflow_id: str
    run_id: str
    event_id: int
    timestamp_ms: int
    attributes: EventAttributes

    @property
    def closes_run(self) -> bool:
        return isinstance(self.attributes, CLOSING_EVENTS)
