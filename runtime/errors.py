"""Typed errors of the public API, and their round trip through `Failure`.

Exceptions cannot cross a process boundary; a `Failure` can. Every error a user may
catch (in workflow code or on the client) is rebuilt from a `Failure` here, so an
activity's `ApplicationError(type="Declined")` raised in one process is the same
`ApplicationError(type="Declined")` inside `ActivityError.cause` in the workflow.
"""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

from runtime.payloads import Failure, Payload


class ChronikError(Exception):
    """Base of every Chronik error."""


class FailureError(ChronikError):
    """An error that is, or came from, a `Failure`."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        # Text, whatever was given: ``ApplicationError(error)`` (the exception itself) made
        # a Failure no record could hold, so an activity's report was never sent.
        message = str(message)
        super().__init__(message)
        self.message = message
        self.failure: Failure | None = None
        if cause is not None:
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        return self.__cause__


class ApplicationError(FailureError):
    """A user error; `non_retryable` stops retries at once, `type` is matched by retry policies."""

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.details: tuple[Any, ...] = details
        self.type = None if type is None else str(type)
        self.non_retryable = bool(non_retryable)


class TimeoutError(FailureError):
    """A timeout ended an activity or a workflow; `type` names which one."""

    def __init__(self, message: str, *, type: str) -> None:
        super().__init__(message)
        self.type = type


class CancelledError(FailureError):
    """The workflow or activity was cancelled (as seen by a client or a parent)."""


class TerminatedError(FailureError):
    """The workflow was terminated."""


class ActivityError(FailureError):
    """An activity failed for good; `.cause` says why (ApplicationError, TimeoutError...)."""

    def __init__(
        self,
        message: str,
        *,
        activity_type: str = "",
        seq: int = 0,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message, cause=cause)
        self.activity_type = activity_type
        self.seq = seq


class ChildWorkflowError(FailureError):
    """A child workflow failed, was cancelled, terminated or timed out; `.cause` says which."""

    def __init__(
        self, message: str, *, workflow_id: str = "", cause: BaseException | None = None
    ) -> None:
        super().__init__(message, cause=cause)
        self.workflow_id = workflow_id


class NonDeterminismError(ChronikError):
    """Workflow code issued a different command than the history recorded.

    It fails the workflow *task*, never the workflow: the run stays open until code that
    agrees with its history is deployed.
    """

    def __init__(self, event_id: int, expected: str, got: str) -> None:
        super().__init__(
            f"non-determinism at event {event_id}: history has {expected}, "
            f"workflow code issued {got}"
        )
        self.event_id = event_id
        self.expected = expected
        self.got = got


# --- client-side errors ---------------------------------------------------------------------


class WorkflowTypeNotRegisteredError(NonDeterminismError):
    """A run's workflow type is not registered with the code replaying it (a worker that
    does not load every type of its namespace, a renamed type): its task fails until code
    that has the type takes the run."""

    def __init__(
        self, event_id: int, workflow_type: str, *, replayer_has: Sequence[str] | None = None
    ) -> None:
        """``replayer_has``: raised by a `Replayer`, whose workflows these are (the advice
        for a worker does not fit the one replaying a captured history)."""
        message = (
            f"workflow type {workflow_type!r} is not registered with this worker (event "
            f"{event_id}): every workflow worker of a namespace must load all its types"
            if replayer_has is None
            else f"workflow type {workflow_type!r} is not among the Replayer's workflows "
            f"(event {event_id}; it has: {', '.join(replayer_has) or 'none'})"
        )
        ChronikError.__init__(self, message)
        self.event_id = event_id
        self.expected = f"a run of workflow type {workflow_type!r}"
        self.got = "no workflow registered under that name"


class ReadOnlyContextError(ChronikError):
    """A query or an update validator tried to change its workflow (issue a command, draw
    from `workflow.random()`, wait): they may only read it."""


class WorkflowFailureError(ChronikError):
    """`handle.result()` of a run that did not complete; `.cause` is the typed reason."""

    def __init__(self, *, cause: BaseException) -> None:
        super().__init__(f"workflow execution failed: {cause}")
        self.__cause__ = cause

    @property
    def cause(self) -> BaseException:
        assert self.__cause__ is not None
        return self.__cause__


class WorkflowAlreadyStartedError(FailureError):
    """A start was refused by the id-reuse policy."""


class WorkflowNotFoundError(FailureError):
    """The workflow id (or run id) has no run."""


class WorkflowQueryFailedError(FailureError):
    """The query handler raised, or no such query exists."""


class WorkflowUpdateFailedError(FailureError):
    """The update was rejected by its validator or its handler raised."""


class RPCError(FailureError):
    """A request could not be served."""


class UnknownSignalError(RPCError):
    """The run's workflow type has no handler for the signal's name (a typo, or a handler
    this deploy does not have yet): nothing was recorded, so sending it again later is
    safe."""


class RPCTimeoutError(RPCError):
    """No reply arrived in time (the request may still take effect)."""


class ClientClosedError(RPCError):
    """The client was closed while a request waited, or before it was made (a request
    already sent may still take effect)."""


class ActivityNotCurrentError(ChronikError):
    """The workflow no longer waits on the attempt a task token names: it cancelled the
    activity, the attempt timed out or failed (a retry may be running), the activity
    completed, or the run closed. What a system completing the activity from outside
    hears on its heartbeat (Temporal's ``AsyncActivityCancelledError``), to stop work
    whose outcome the workflow would ignore. ``reason`` says which it was."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ContinueAsNewError(BaseException):
    """Raised by `workflow.continue_as_new`; the engine turns it into a new run.

    A BaseException so that a broad `except Exception` in workflow code does not swallow it.
    """

    def __init__(
        self, workflow_type: str | None, task_queue: str | None, args: Sequence[Any]
    ) -> None:
        super().__init__("continue as new")
        self.workflow_type = workflow_type
        self.task_queue = task_queue
        self.args = tuple(args)


# --- Failure <-> exception ----------------------------------------------------------------

_ALREADY_STARTED = "WorkflowAlreadyStartedError"
_NOT_FOUND = "WorkflowNotFoundError"
#: The failure type of a start whose workflow type no code registered (Temporal's name).
TYPE_NOT_FOUND = "WorkflowTypeNotFound"
_UNKNOWN_SIGNAL = "UnknownSignalError"


def failure_from_exception(
    exc: BaseException, encode: Any = None, *, with_stack: bool = True
) -> Failure:
    """Describe `exc` (and its cause chain) as a `Failure`.

    `encode` turns `ApplicationError.details` into payloads; without it they are dropped.
    """
    stack = "".join(traceback.format_exception(exc)) if with_stack else ""
    cause_exc = exc.__cause__
    cause = failure_from_exception(cause_exc, encode, with_stack=False) if cause_exc else None
    if isinstance(exc, FailureError) and exc.failure is not None and not with_stack:
        return exc.failure
    if isinstance(exc, ApplicationError):
        message, details = _application_details(exc, encode)
        return Failure(
            message=message,
            kind="application",
            type=exc.type or type(exc).__name__,
            stack_trace=stack,
            non_retryable=exc.non_retryable,
            details=details,
            cause=cause,
        )
    if isinstance(exc, TimeoutError):
        return Failure(exc.message, kind="timeout", timeout_type=exc.type, cause=cause)
    if isinstance(exc, CancelledError):
        return Failure(exc.message, kind="cancelled", cause=cause)
    if isinstance(exc, TerminatedError):
        return Failure(exc.message, kind="terminated", cause=cause)
    if isinstance(exc, ActivityError):
        return Failure(exc.message, kind="activity", type=exc.activity_type, cause=cause)
    if isinstance(exc, ChildWorkflowError):
        return Failure(exc.message, kind="child_workflow", type=exc.workflow_id, cause=cause)
    if isinstance(exc, NonDeterminismError):
        return Failure(str(exc), kind="nondeterminism", type=type(exc).__name__)
    message = str(exc) or type(exc).__name__
    return Failure(
        message=message, kind="application", type=type(exc).__name__, stack_trace=stack, cause=cause
    )


def _application_details(exc: ApplicationError, encode: Any) -> tuple[str, tuple[Payload, ...]]:
    """The error's message and encoded details; details the converter refuses are dropped,
    and the message says so.

    Failing on them instead turned the error into the converter's `TypeError`, retryable
    and of another type: a non-retryable `Declined` was retried, its side effects again.
    """
    if not encode or not exc.details:
        return exc.message, ()
    try:
        return exc.message, tuple(encode(exc.details))
    except Exception as unencodable:
        return f"{exc.message} (its details were dropped: {unencodable})", ()


def exception_from_failure(failure: Failure, decode: Any = None) -> FailureError:
    """Rebuild the typed exception a `Failure` describes (with its cause chain)."""
    cause = exception_from_failure(failure.cause, decode) if failure.cause else None
    exc: FailureError
    if failure.kind == "timeout":
        exc = TimeoutError(failure.message, type=failure.timeout_type)
    elif failure.kind == "cancelled":
        exc = CancelledError(failure.message)
    elif failure.kind == "terminated":
        exc = TerminatedError(failure.message)
    elif failure.kind == "activity":
        exc = ActivityError(failure.message, activity_type=failure.type)
    elif failure.kind == "child_workflow":
        exc = ChildWorkflowError(failure.message, workflow_id=failure.type)
    elif failure.type == _ALREADY_STARTED:
        exc = WorkflowAlreadyStartedError(failure.message)
    elif failure.type == _NOT_FOUND:
        exc = WorkflowNotFoundError(failure.message)
    elif failure.type == _UNKNOWN_SIGNAL:
        exc = UnknownSignalError(failure.message)
    else:
        details = tuple(decode(failure.details)) if decode and failure.details else ()
        exc = ApplicationError(
            failure.message, *details, type=failure.type, non_retryable=failure.non_retryable
        )
    exc.failure = failure
    if cause is not None:
        exc.__cause__ = cause
    return exc


def already_started_failure(workflow_id: str, run_id: str) -> Failure:
    return Failure(
        f"workflow {workflow_id!r} already has a run ({run_id}) and the id-reuse policy refuses",
        type=_ALREADY_STARTED,
        non_retryable=True,
    )


def not_found_failure(
    workflow_id: str, run_id: str | None = None, *, closed_as: str | None = None
) -> Failure:
    """No such workflow (or run) to act on; ``closed_as``: there is one, but it closed
    (with that status), so nothing can be sent to it any more."""
    what = f"run {run_id!r} of workflow {workflow_id!r}" if run_id else f"workflow {workflow_id!r}"
    state = f"is closed ({closed_as}): it takes no more requests" if closed_as else "not found"
    return Failure(f"{what} {state}", type=_NOT_FOUND, non_retryable=True)


def no_handler_message(kind: str, workflow_type: str, name: str, known: Iterable[str]) -> str:
    """``workflow X has no signal 'aprove' (its signals: approve; did you mean 'approve'?)``:
    what an operator who mistyped a handler's name needs to see."""
    names = sorted(known)
    listed = ", ".join(repr(n) for n in names) if names else "none"
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"workflow {workflow_type} has no {kind} {name!r} (its {kind}s: {listed}{hint})"


def unknown_signal_failure(
    workflow_id: str, workflow_type: str, name: str, known: Iterable[str]
) -> Failure:
    """A signal refused because the run's code has no handler for it: nothing is recorded."""
    what = no_handler_message("signal", workflow_type, name, known)
    return Failure(
        f"{what}: workflow {workflow_id!r} did not take it, nothing was recorded",
        type=_UNKNOWN_SIGNAL,
        non_retryable=True,
    )
