"""The engine-side state of a run, rebuilt from events alone.

Everything here is derived by applying history events, so a crash loses nothing: pending
activities with their attempt and deadlines, user timers, children, seen signal request
ids, update outcomes. The code side (`WorkflowRun`) is separate and may be absent (an
unknown workflow type, or a run whose task failed on non-determinism).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from runtime.engine.commands import COMMAND_EVENTS, Command
from runtime.engine.workflow_run import WorkflowRun
from runtime.errors import NonDeterminismError
from runtime.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ActivityTimedOut,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    ChildWorkflowStartFailed,
    EventAttributes,
    SignalReceived,
    TimerFired,
    UpdateAccepted,
    UpdateCompleted,
    WorkflowCancelRequested,
    WorkflowStarted,
)
from runtime.messages import WorkflowStatus
from runtime.payloads import Failure, Payload


class EventClass(Enum):
    """How replay treats an event.

    COMMAND: produced by workflow code, matched against what the code issues.
    WAKE: an input that can unblock code; the code runs after it is applied.
    BOOKKEEPING: engine decisions invisible to code (attempts, starts, heartbeats).
    """

    COMMAND = auto()
    WAKE = auto()
    BOOKKEEPING = auto()


_WAKE = (
    WorkflowStarted,
    SignalReceived,
    UpdateAccepted,
    WorkflowCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    TimerFired,
    ChildWorkflowStarted,
    ChildWorkflowStartFailed,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
)


def classify(attrs: EventAttributes) -> EventClass:
    if isinstance(attrs, COMMAND_EVENTS):
        return EventClass.COMMAND
    if isinstance(attrs, _WAKE):
        return EventClass.WAKE
    return EventClass.BOOKKEEPING


class Phase(Enum):
    SCHEDULED = auto()  # attempt dispatched, not reported started
    STARTED = auto()
    BACKOFF = auto()  # waiting for the retry timer
    CLOSED = auto()


@dataclass
class ActivityState:
    scheduled: ActivityScheduled
    scheduled_time_ms: int
    attempt: int = 1
    phase: Phase = Phase.SCHEDULED
    heartbeat_details: tuple[Payload, ...] = ()
    # What `describe()` reports of the attempts (`runtime.engine.pending`):
    #: When the current attempt was dispatched.
    attempt_time_ms: int = 0
    last_started_time_ms: int | None = None
    last_heartbeat_time_ms: int | None = None
    last_failure: Failure | None = None
    #: During a backoff: when the next attempt is dispatched.
    next_attempt_time_ms: int | None = None


@dataclass
class ChildState:
    workflow_id: str
    workflow_type: str
    run_id: str | None = None
    closed: bool = False


@dataclass
class RunState:
    run_id: str
    started: WorkflowStarted
    start_time_ms: int
    status: WorkflowStatus = WorkflowStatus.RUNNING
    close_time_ms: int | None = None
    result: Payload | None = None
    failure: Failure | None = None
    code: WorkflowRun | None = None
    activities: dict[int, ActivityState] = field(default_factory=dict)
    #: The code's pending timers: seq -> fire time.
    timers: dict[int, int] = field(default_factory=dict)
    children: dict[int, ChildState] = field(default_factory=dict)
    signal_ids: set[str] = field(default_factory=set)
    cancel_request_ids: set[str] = field(default_factory=set)
    #: The request id of the terminate that closed the run, if one did.
    terminate_request_id: str | None = None
    updates: dict[str, UpdateCompleted | None] = field(default_factory=dict)
    #: Engine-owned durable timers: timer id -> the fire time that is current.
    deadlines: dict[str, int] = field(default_factory=dict)
    #: Set when the code disagreed with the history; the run waits for fixed code.
    stuck: NonDeterminismError | None = None
    stuck_recorded: bool = False
    #: Why the last status record written for this run says its task fails (None: it
    #: does not): once the run is no longer stuck, or stuck for another reason, a new
    #: record must say so.
    reported_failure: str | None = None
    #: After a recorded task failure, code may issue commands the history lacks; only
    #: until replay reaches the next recorded command (`RecordedEvents._end_leniency`).
    lenient: bool = False
    pending_commands: list[Command] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.status != WorkflowStatus.RUNNING

    @property
    def workflow_type(self) -> str:
        return self.started.workflow_type

    @property
    def task_queue(self) -> str:
        return self.started.task_queue

    def detach_code(self, error: NonDeterminismError) -> None:
        """The code can no longer be trusted with this run: it waits for fixed code.

        The state machines go on (activities, timers and children are still tracked), so
        a redeploy resumes the run where it stands.
        """
        self.stuck = error
        if self.code is not None:
            self.code.destroy()
            self.code = None
