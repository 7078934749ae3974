"""The API activity code uses: `from runtime import activity`.

Activities are ordinary functions (async, or plain and run in a thread pool). Inside one,
`activity.info()`, `activity.heartbeat()` and `activity.is_cancelled()` read a context the
executor (`runtime.engine.activity_executor.run_activity`) sets up for each attempt.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

from runtime.definitions import define_activity
from runtime.task_token import TaskToken

__all__ = [
    "ActivityInfo",
    "CompleteAsyncError",
    "defn",
    "heartbeat",
    "info",
    "is_cancelled",
    "raise_complete_async",
]

_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def defn(fn: _F, /) -> _F: ...
@overload
def defn(*, name: str | None = None) -> Callable[[_F], _F]: ...
def defn(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Declare an activity; `name` lets a mock replace the real one in tests."""

    def wrap(f: Any) -> Any:
        define_activity(f, name)
        return f

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True)
class ActivityInfo:
    """What an attempt knows about itself; the names are Temporal's where the concept is the
    same, so that activity code moves over by changing imports."""

    workflow_id: str
    run_id: str
    workflow_type: str
    activity_type: str
    task_queue: str
    seq: int
    attempt: int
    #: When the activity was scheduled (its first attempt dispatched), as in Temporal:
    #: how long it has been trying, which its schedule-to-close timeout bounds.
    scheduled_time: datetime
    #: When this attempt was dispatched (after the previous one's retry backoff).
    current_attempt_scheduled_time: datetime
    #: Same for every delivery of one attempt: dedupe side effects on it.
    idempotency_key: str
    #: The last details the previous attempt heartbeated (decoded), to resume from.
    heartbeat_details: Sequence[Any]
    heartbeat_timeout: timedelta | None = None
    start_to_close_timeout: timedelta | None = None
    schedule_to_close_timeout: timedelta | None = None
    #: When this worker started the attempt (the test environment's virtual time there,
    #: like the scheduled times).
    started_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Chronik has no local activities.
    is_local: bool = False

    @property
    def workflow_run_id(self) -> str:
        """Temporal's name for `run_id`."""
        return self.run_id

    @property
    def task_token(self) -> bytes:
        """Names this attempt, for `Client.get_async_activity_handle` (see
        `raise_complete_async`)."""
        return TaskToken(self.workflow_id, self.run_id, self.seq, self.attempt).encode()

    @property
    def activity_id(self) -> str:
        """The activity's id within its run: its sequence number (Temporal's default id);
        with `workflow_run_id`, the idempotency key Temporal's documentation suggests."""
        return str(self.seq)


@dataclass
class ActivityContext:
    info: ActivityInfo
    heartbeat: Callable[[tuple[Any, ...]], None]
    cancelled: threading.Event


_current: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("chronik_activity")


def _context() -> ActivityContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("not in an activity") from None


def set_context(ctx: ActivityContext) -> contextvars.Token[ActivityContext]:
    return _current.set(ctx)


def info() -> ActivityInfo:
    return _context().info


def heartbeat(*details: Any) -> None:
    """Report liveness (and progress to resume from); needed when `heartbeat_timeout` is set."""
    _context().heartbeat(details)


def is_cancelled() -> bool:
    """True once the workflow cancelled this activity or its attempt timed out."""
    return _context().cancelled.is_set()


class CompleteAsyncError(BaseException):
    """Raised by `raise_complete_async`; the executor catches it. A BaseException, as
    Temporal's is, so that an activity's ``except Exception`` does not swallow it."""


def raise_complete_async() -> None:
    """End this function without ending the attempt: it completes later, from outside.

    Keep `info().task_token` where the work goes (a payment provider's callback, a
    ticket for a person); whoever finishes it calls ``complete``, ``fail`` or
    ``heartbeat`` on `Client.get_async_activity_handle(token)`. The worker frees its
    slot and reports nothing; the attempt's timeouts still run (start-to-close, and
    heartbeat when set: heartbeat through the handle then), and when one ends it the
    retry policy decides, as for any attempt. A completion for an attempt no longer
    current (it timed out, the workflow moved on) is ignored, as a late report is.
    """
    _context()  # only inside an activity
    raise CompleteAsyncError()
