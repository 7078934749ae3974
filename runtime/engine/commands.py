"""Commands: what workflow code asks for, one per history event kind it produces.

Live, a command becomes its event; on replay it must equal the recorded event in kind and
identity (`seq`, activity type, timer, child id, marker id) or the task fails with a
`NonDeterminismError`. `describe` renders both sides of that comparison for the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.engine.patches import PATCH_MARKER, is_patch_marker
from runtime.events import (
    ActivityCancelRequested,
    ActivityScheduled,
    ChildWorkflowCancelRequested,
    ChildWorkflowInitiated,
    EventAttributes,
    ExternalSignalSent,
    MarkerRecorded,
    TimerCancelled,
    TimerStarted,
    UpdateCompleted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
)

#: Commands are carried as the event attributes they will become; the engine fills in
#: what only it knows (the new run id of a continue-as-new) when recording them.
Command = (
    ActivityScheduled
    | ActivityCancelRequested
    | TimerStarted
    | TimerCancelled
    | ChildWorkflowInitiated
    | ChildWorkflowCancelRequested
    | ExternalSignalSent
    | MarkerRecorded
    | UpdateCompleted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCancelled
    | WorkflowContinuedAsNew
)

COMMAND_EVENTS = (
    ActivityScheduled,
    ActivityCancelRequested,
    TimerStarted,
    TimerCancelled,
    ChildWorkflowInitiated,
    ChildWorkflowCancelRequested,
    ExternalSignalSent,
    MarkerRecorded,
    UpdateCompleted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
)


@dataclass(frozen=True)
class _Identity:
    kind: str
    key: tuple[object, ...]


def _identity(attrs: EventAttributes) -> _Identity:
    kind = type(attrs).__name__
    match attrs:
        case ActivityScheduled(seq=seq, activity_type=t):
            return _Identity(kind, (seq, t))
        case TimerStarted(seq=seq):
            return _Identity(kind, (seq,))
        case ChildWorkflowInitiated(seq=seq, workflow_id=wid, workflow_type=t):
            return _Identity(kind, (seq, wid, t))
        case ExternalSignalSent(seq=seq, workflow_id=wid, signal_name=n):
            return _Identity(kind, (seq, wid, n))
        case MarkerRecorded(name=n, marker_id=m) if n == PATCH_MARKER:
            # No seq: a patch id is decided once per run, so the id alone names it, and
            # markers skipped on replay (a deprecated patch whose call was removed) must
            # not shift the ones after them.
            return _Identity(kind, (n, m))
        case MarkerRecorded(seq=seq, name=n, marker_id=m):
            return _Identity(kind, (seq, n, m))
        case UpdateCompleted(update_id=u):
            return _Identity(kind, (u,))
        case ActivityCancelRequested(seq=seq) | TimerCancelled(seq=seq):
            return _Identity(kind, (seq,))
        case ChildWorkflowCancelRequested(seq=seq):
            return _Identity(kind, (seq,))
        case WorkflowContinuedAsNew(workflow_type=t):
            return _Identity(kind, (t,))
        case _:
            return _Identity(kind, ())


def same_command(command: Command, recorded: EventAttributes) -> bool:
    return _identity(command) == _identity(recorded)


def describe(attrs: EventAttributes | None) -> str:
    """A short, stable rendering for error messages: kind and identity, never payloads."""
    if attrs is None:
        return "nothing"
    ident = _identity(attrs)
    names: tuple[str, ...] = {
        ActivityScheduled: ("seq", "activity_type"),
        TimerStarted: ("seq",),
        ChildWorkflowInitiated: ("seq", "workflow_id", "workflow_type"),
        ExternalSignalSent: ("seq", "workflow_id", "signal_name"),
        MarkerRecorded: ("seq", "name", "marker_id"),
        UpdateCompleted: ("update_id",),
        ActivityCancelRequested: ("seq",),
        TimerCancelled: ("seq",),
        ChildWorkflowCancelRequested: ("seq",),
        WorkflowContinuedAsNew: ("workflow_type",),
    }.get(type(attrs), ())
    if is_patch_marker(attrs):  # its identity has no seq
        names = ("name", "marker_id")
    inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, ident.key, strict=False))
    return f"{ident.kind}({inner})"
