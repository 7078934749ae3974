"""The API workflow code uses: `from runtime import workflow`.

Decorators define workflows; the functions below only work inside workflow code, where
they issue commands to the deterministic engine (see `runtime.engine`). Names and
signatures follow Temporal's Python SDK so that workflows move over by changing imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, overload

import structlog

from runtime.definitions import (
    QUERY_ATTR,
    RUN_ATTR,
    SIGNAL_ATTR,
    UPDATE_ATTR,
    VALIDATOR_ATTR,
    activity_definition,
    define_workflow,
    handler_name,
    workflow_definition,
    workflow_name,
)
from runtime.engine.workflow_run import WorkflowInfo, current_run
from runtime.errors import ContinueAsNewError
from runtime.events import ActivityScheduled, ChildWorkflowInitiated
from runtime.retry import DEFAULT_ACTIVITY_RETRY, RetryPolicy

__all__ = [
    "ChildWorkflowHandle",
    "WorkflowInfo",
    "continue_as_new",
    "defn",
    "deprecate_patch",
    "execute_activity",
    "execute_child_workflow",
    "get_external_workflow_handle",
    "info",
    "logger",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "signal",
    "sleep",
    "start_activity",
    "start_child_workflow",
    "update",
    "uuid4",
    "wait_condition",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


# --- decorators ---------------------------------------------------------------------------


@overload
def defn(target: _T, /) -> _T: ...
@overload
def defn(*, name: str | None = None) -> Callable[[_T], _T]: ...
def defn(target: Any = None, /, *, name: str | None = None) -> Any:
    """Declare a workflow: an `async def` function, or a class with a `@workflow.run` method."""

    def wrap(t: Any) -> Any:
        define_workflow(t, name)
        return t

    return wrap(target) if target is not None else wrap


def run(fn: _F) -> _F:
    """Mark the entry point of a class-style workflow."""
    setattr(fn, RUN_ATTR, True)
    return fn


def _named(attr: str, fn: Any, name: str | None) -> Any:
    def wrap(f: Any) -> Any:
        setattr(f, attr, name or f.__name__)
        return f

    return wrap(fn) if fn is not None else wrap


@overload
def signal(fn: _F, /) -> _F: ...
@overload
def signal(*, name: str | None = None) -> Callable[[_F], _F]: ...
def signal(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a signal handler (sync or async); signals are recorded before they are handled."""
    return _named(SIGNAL_ATTR, fn, name)


@overload
def query(fn: _F, /) -> _F: ...
@overload
def query(*, name: str | None = None) -> Callable[[_F], _F]: ...
def query(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a query handler: a plain `def` that reads state and must not change it."""
    return _named(QUERY_ATTR, fn, name)


def _attach_validator(fn: Any, update_name: str) -> None:
    def validator(v: _F) -> _F:
        setattr(v, VALIDATOR_ATTR, update_name)
        return v

    fn.validator = validator


@overload
def update(fn: _F, /) -> _F: ...
@overload
def update(*, name: str | None = None) -> Callable[[_F], _F]: ...
def update(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark an update handler; `@handler.validator` adds a validator that can reject it."""

    def wrap(f: Any) -> Any:
        update_name = name or f.__name__
        setattr(f, UPDATE_ATTR, update_name)
        _attach_validator(f, update_name)
        return f

    return wrap(fn) if fn is not None else wrap


# --- activities ---------------------------------------------------------------------------


def _ms(value: timedelta | None) -> int:
    return round(value.total_seconds() * 1000) if value else 0


def _activity_name_and_type(activity: Any, result_type: Any) -> tuple[str, Any]:
    if isinstance(activity, str):
        return activity, result_type
    defn = activity_definition(activity)
    if defn is None:
        raise TypeError(f"{activity!r} is not an @activity.defn activity")
    return defn.name, result_type if result_type is not None else defn.return_type


def start_activity(
    activity: Any,
    *args: Any,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> asyncio.Task[Any]:
    """Schedule an activity and return a task for its result (cancel it to cancel the activity)."""
    if schedule_to_close_timeout is None and start_to_close_timeout is None:
        raise ValueError("an activity needs start_to_close_timeout or schedule_to_close_timeout")
    rt = current_run()
    name, rtype = _activity_name_and_type(activity, result_type)
    policy = (retry_policy or DEFAULT_ACTIVITY_RETRY).to_record()
    payloads = rt.converter.encode(args)
    queue = task_queue or rt.info.task_queue

    def event(seq: int) -> ActivityScheduled:
        return ActivityScheduled(
            seq=seq,
            activity_type=name,
            task_queue=queue,
            input=payloads,
            schedule_to_close_timeout_ms=_ms(schedule_to_close_timeout),
            schedule_to_start_timeout_ms=_ms(schedule_to_start_timeout),
            start_to_close_timeout_ms=_ms(start_to_close_timeout),
            heartbeat_timeout_ms=_ms(heartbeat_timeout),
            retry_policy=policy,
        )

    fut = rt.schedule_activity(event, rtype)

    async def wait() -> Any:
        return await fut

    task = rt.loop.create_task(wait(), name=f"activity:{name}")
    # A task cancelled before its first step never awaits `fut`: cancel the activity itself.
    task.add_done_callback(lambda t: fut.cancel() if t.cancelled() else None)
    return task


async def execute_activity(
    activity: Any,
    *args: Any,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> Any:
    """Run an activity to its end; raises `ActivityError` (with `.cause`) when it fails for good."""
    return await start_activity(
        activity,
        *args,
        task_queue=task_queue,
        schedule_to_close_timeout=schedule_to_close_timeout,
        schedule_to_start_timeout=schedule_to_start_timeout,
        start_to_close_timeout=start_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
        result_type=result_type,
    )


# --- time, randomness, info ---------------------------------------------------------------


async def sleep(duration: timedelta | float) -> None:
    """A durable timer: survives restarts; `asyncio.sleep` does exactly the same in a workflow."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    await asyncio.sleep(seconds)


async def wait_condition(
    fn: Callable[[], bool],
    *,
    timeout: timedelta | float | None = None,
) -> None:
    """Wait until `fn()` is true; `asyncio.TimeoutError` after `timeout` (a durable timer)."""
    fut = current_run().wait_condition(fn)
    if timeout is None:
        await fut
        return
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    await asyncio.wait_for(fut, seconds)


def now() -> datetime:
    """The workflow's time: the time of the event being processed, identical on replay."""
    return current_run().now()


def random() -> Any:
    """A `random.Random` seeded from the run id: same numbers on every replay."""
    return current_run().random


def uuid4() -> Any:
    """A UUID from the workflow's seeded random."""
    return current_run().uuid4()


def info() -> WorkflowInfo:
    return current_run().info


def patched(patch_id: str) -> bool:
    """Versioning: True for runs that reach this point with the new code, False on old histories."""
    return current_run().patched(patch_id)


def deprecate_patch(patch_id: str) -> None:
    """Versioning, once no run that took the old branch of `patched(patch_id)` is left:
    call this instead and keep only the new branch.

    It replays the histories recorded under `patched(patch_id)` and records a marker
    flagged deprecated, which a worker still running the `patched` code reads as the
    patch. Once every run recorded under `patched(patch_id)` is gone, the call itself
    can be removed: the flagged markers are skipped on replay.
    """
    current_run().deprecate_patch(patch_id)


def continue_as_new(*args: Any, workflow: Any = None, task_queue: str | None = None) -> NoReturn:
    """Close this run and start a fresh one (new run id, empty history) with `args`."""
    current_run()
    raise ContinueAsNewError(workflow_name(workflow) if workflow else None, task_queue, args)


class _ReplaySafeLogger:
    """structlog, silent while the engine replays history (so each line is logged once)."""

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **kw: Any) -> None:
            try:
                rt = current_run()
            except RuntimeError:
                getattr(structlog.get_logger("chronik.workflow"), level)(event, **kw)
                return
            if rt.replaying:
                return
            getattr(structlog.get_logger("chronik.workflow"), level)(
                event, workflow_id=rt.info.workflow_id, run_id=rt.info.run_id, **kw
            )

        return log


logger: Any = _ReplaySafeLogger()


# --- child and external workflows -----------------------------------------------------------


class ChildWorkflowHandle:
    """A started child: `await handle` (or `await handle.result()`) for its result."""

    def __init__(self, workflow_id: str, run_id: str, result: asyncio.Future[Any]) -> None:
        self.id = workflow_id
        self.first_execution_run_id = run_id
        self._result = result

    async def result(self) -> Any:
        return await self._result

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result.__await__()

    async def signal(self, sig: Any, *args: Any) -> None:
        await get_external_workflow_handle(self.id).signal(sig, *args)


async def start_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    result_type: Any = None,
) -> ChildWorkflowHandle:
    """Start a child workflow and wait until it started.

    A refused start (id-reuse policy) raises `ChildWorkflowError`.
    """
    rt = current_run()
    name = workflow_name(workflow)
    defn = None if isinstance(workflow, str) else workflow_definition(workflow)
    rtype = result_type if result_type is not None else (defn.return_type if defn else None)
    payloads = rt.converter.encode(args)
    queue = task_queue or rt.info.task_queue

    def event(seq: int) -> ChildWorkflowInitiated:
        child_id = id or f"{rt.info.workflow_id}/{rt.info.run_id[:8]}/child-{seq}"
        return ChildWorkflowInitiated(seq, child_id, name, queue, payloads, _ms(execution_timeout))

    child = rt.start_child(event, rtype)
    run_id = await child.started
    return ChildWorkflowHandle(child.workflow_id, run_id, child.result)


async def execute_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    result_type: Any = None,
) -> Any:
    """Start a child workflow and wait for its result; failures raise `ChildWorkflowError`."""
    handle = await start_child_workflow(
        workflow,
        *args,
        id=id,
        task_queue=task_queue,
        execution_timeout=execution_timeout,
        result_type=result_type,
    )
    return await handle


class ExternalWorkflowHandle:
    def __init__(self, workflow_id: str) -> None:
        self.id = workflow_id

    async def signal(self, sig: Any, *args: Any) -> None:
        """Send a signal to another workflow (recorded, delivered at least once)."""
        current_run().signal_external(self.id, handler_name(sig, SIGNAL_ATTR), args)


def get_external_workflow_handle(workflow_id: str) -> ExternalWorkflowHandle:
    return ExternalWorkflowHandle(workflow_id)
