"""Running one activity attempt: the executor every host (Kafka, in-memory) shares.

It decodes the input, sets up the context `runtime.activity` reads, runs the function
(async ones on the loop, plain ones in a thread pool), and turns the outcome into a
report for the workflow's inbox. Exceptions become `Failure`s here, once, so every host
reports them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.activity import ActivityContext, ActivityInfo, CompleteAsyncError, set_context
from runtime.converter import DataConverter
from runtime.daemon_pool import DaemonThreadPool
from runtime.engine.registry import ActivityRegistry
from runtime.epoch import datetime_of
from runtime.errors import failure_from_exception
from runtime.messages import ActivityCompletedReport, ActivityFailedReport, ActivityTask
from runtime.payloads import Failure, Payload

#: How long a cancelled activity may take to finish (its cleanup) before its attempt ends.
CANCEL_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class CompletesAsync:
    """The activity called `activity.raise_complete_async`: the attempt goes on outside the
    worker, which reports nothing for it and frees its slot."""


COMPLETES_ASYNC = CompletesAsync()
#: How an attempt ends on its worker.
AttemptOutcome = ActivityCompletedReport | ActivityFailedReport | CompletesAsync


async def run_activity(
    registry: ActivityRegistry,
    task: ActivityTask,
    *,
    converter: DataConverter | None = None,
    on_heartbeat: Callable[[tuple[Payload, ...]], None],
    cancelled: asyncio.Event,
    executor: Executor | None = None,
    cancel_grace_s: float = CANCEL_GRACE_S,
    on_abandoned: Callable[[], None] = lambda: None,
    grace_ended: asyncio.Event | None = None,
    started_at_ms: int | None = None,
) -> AttemptOutcome:
    """Run `task` once; never raises (except for the caller's own cancellation).

    Once ``cancelled`` is set, the activity has ``cancel_grace_s`` to finish (async ones
    get `asyncio.CancelledError`; every one sees `activity.is_cancelled()`); the attempt
    is then reported cancelled. ``on_abandoned`` is called when the attempt ends with the
    activity still running past that grace — a thread runs on, which its host may want
    to tell the operator about, since only the host knows whether that matters. A host
    whose clock is not the real one (the in-memory environment, skipping time) sets
    ``grace_ended`` when its clock passed the grace first: a test must not wait out in
    real time a grace its virtual time jumped over. Such a host also says when, on its
    clock, it started the attempt (``started_at_ms``; the wall clock's now by default):
    `activity.info().started_time` read the wall clock while the task's scheduled times
    were virtual, so an activity measuring its own delay got nonsense."""
    conv = converter or registry.converter
    defn = registry.get(task.activity_type)

    def failed(failure: Failure) -> ActivityFailedReport:
        return ActivityFailedReport(task.workflow_id, task.run_id, task.seq, task.attempt, failure)

    if defn is None:
        known = ", ".join(registry.names()) or "none"
        return failed(
            Failure(
                f"activity type {task.activity_type!r} is not registered on task queue "
                f"{task.task_queue!r} (registered: {known})",
                type="ActivityTypeNotFound",
            )
        )
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    stop = threading.Event()
    #: Set once the attempt's outcome is decided: a sync activity cannot be stopped, and
    #: its later heartbeats are about an attempt no longer running here.
    over = threading.Event()

    def heartbeat(details: tuple[Any, ...]) -> None:
        if over.is_set():
            return
        payloads = conv.encode(details)
        # On the loop, whatever thread the activity calls from: a sync activity's pool
        # thread, or a thread of an async one (`asyncio.to_thread`), where the host's
        # handling (timers for held-back details) raised "no running event loop".
        if threading.get_ident() == loop_thread:
            on_heartbeat(payloads)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                loop.call_soon_threadsafe(_unless_over, over, on_heartbeat, payloads)

    try:
        # Inside the try, like the input: the previous attempt's details may come from a
        # codec this worker lacks, and raising here left the task without any report.
        info = ActivityInfo(
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            workflow_type=task.workflow_type,
            activity_type=task.activity_type,
            task_queue=task.task_queue,
            seq=task.seq,
            attempt=task.attempt,
            # A task written before it carried its first schedule knows only this
            # attempt's, which is the first one's on attempt 1.
            scheduled_time=datetime_of(task.first_scheduled_time_ms or task.scheduled_time_ms),
            current_attempt_scheduled_time=datetime_of(task.scheduled_time_ms),
            idempotency_key=task.idempotency_key,
            heartbeat_details=conv.decode(task.heartbeat_details),
            heartbeat_timeout=_timedelta(task.heartbeat_timeout_ms),
            start_to_close_timeout=_timedelta(task.start_to_close_timeout_ms),
            schedule_to_close_timeout=_timedelta(task.schedule_to_close_timeout_ms),
            started_time=_started_time(started_at_ms),
        )
        ctx = contextvars.copy_context()
        ctx.run(set_context, ActivityContext(info, heartbeat, stop))
        args = conv.decode(task.input, defn.arg_types)
        #: A sync call's future in ``executor``: what tells, at the end of the grace,
        #: whether it still holds a thread or never got one.
        pooled: Future[Any] | None = None
        if defn.is_async:
            work: asyncio.Future[Any] = ctx.run(asyncio.ensure_future, defn.fn(*args))
        else:
            call = functools.partial(ctx.run, _unless_stopped, stop, defn.fn, *args)
            if executor is None:
                work = loop.run_in_executor(None, call)
            else:
                pooled = executor.submit(call)
                work = asyncio.wrap_future(pooled, loop=loop)
        await _until_done_or(work, cancelled)
        if not work.done():
            stop.set()
            if defn.is_async:
                work.cancel()
            # The activity's cleanup (an `except CancelledError`, a `finally`; a sync one
            # returning once it sees `is_cancelled()`) is part of the attempt: ending it at
            # once left the coroutine running on its own, and a stopping worker's exit cut
            # that cleanup short. One that ignores the cancellation is let go after this.
            await _until_done_or(work, grace_ended, timeout_s=cancel_grace_s)
            if not work.done():
                still_runs = pooled is None or _let_go(executor, pooled)
                work.cancel()  # a sync one's thread runs on: Python cannot stop it
                if still_runs:
                    on_abandoned()
            return failed(Failure("activity cancelled", kind="cancelled"))
        if work.cancelled():
            return failed(Failure("activity cancelled", kind="cancelled"))
        exc = work.exception()
        if isinstance(exc, CompleteAsyncError):
            return COMPLETES_ASYNC
        if exc is not None:
            return failed(failure_from_exception(exc, conv.encode))
        try:
            result = conv.encode_one(work.result())
        except TypeError as unconvertible:
            # A bug in the activity, not a passing fault: every retry would run its side
            # effects again and fail the same way (unlimited times, by default).
            return failed(
                Failure(
                    f"the activity's result cannot be converted: {unconvertible}",
                    type="ResultNotConvertible",
                    non_retryable=True,
                )
            )
    except Exception as exc:
        return failed(failure_from_exception(exc, conv.encode))
    finally:
        over.set()
    return ActivityCompletedReport(task.workflow_id, task.run_id, task.seq, task.attempt, result)


async def _until_done_or(
    work: asyncio.Future[Any], event: asyncio.Event | None, *, timeout_s: float | None = None
) -> None:
    """Wait until ``work`` is done, ``event`` is set or ``timeout_s`` passed."""
    waiters: set[asyncio.Future[Any]] = {work}
    watcher = None if event is None else asyncio.ensure_future(event.wait())
    if watcher is not None:
        waiters.add(watcher)
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if watcher is not None:
            watcher.cancel()


def _let_go(executor: Executor | None, pooled: Future[Any]) -> bool:
    """Stop waiting for a sync call past its grace; whether it still runs.

    One that never got a thread (every thread busy) is cancelled, and was never started:
    nothing of it is left to abandon. Our own pool is also told, so that a thread the
    call keeps no longer counts as one of its ``max_workers`` (`DaemonThreadPool.abandon`).
    """
    if isinstance(executor, DaemonThreadPool):
        return executor.abandon(pooled)
    return not pooled.cancel() and not pooled.done()


def _unless_over(
    over: threading.Event,
    on_heartbeat: Callable[[tuple[Payload, ...]], None],
    payloads: tuple[Payload, ...],
) -> None:
    """A heartbeat handed over from another thread, unless the attempt ended meanwhile."""
    if not over.is_set():
        on_heartbeat(payloads)


def _started_time(at_ms: int | None) -> datetime:
    """When the attempt started: at ``at_ms`` on the host's clock, else now."""
    return datetime.now(UTC) if at_ms is None else datetime_of(at_ms)


def _timedelta(ms: int) -> timedelta | None:
    """A timeout of the task (0: none) as the activity reads it."""
    return timedelta(milliseconds=ms) if ms else None


def _unless_stopped(stop: threading.Event, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a sync activity in its pool thread, unless it was cancelled while it waited for
    that thread: waiting out a cancelled attempt's grace must not start it then."""
    if stop.is_set():
        return None  # the attempt is reported cancelled whatever this returns
    return fn(*args)
