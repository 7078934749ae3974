"""`run_activity`, the executor every host shares: what it reports, and where heartbeats go.

It promises to turn every outcome into a report and never to raise: a host that got an
exception instead finished the task without a report, and the workflow waited for a
timeout that might never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runtime import ApplicationError, activity
from runtime.engine import ActivityRegistry, run_activity
from runtime.engine.activity_executor import AttemptOutcome
from runtime.messages import ActivityCompletedReport, ActivityFailedReport, ActivityTask
from runtime.payloads import Payload
from topics import serde


class Opaque:
    """A value the JSON converter cannot encode."""


@activity.defn
async def declines() -> None:
    raise ApplicationError("card declined", Opaque(), type="Declined", non_retryable=True)


@activity.defn
async def succeeds() -> str:
    return "ok"


@activity.defn
async def beats_from_a_thread() -> str:
    def work() -> None:
        for n in range(3):
            activity.heartbeat(n)

    await asyncio.to_thread(work)
    return "done"


release = threading.Event()
after_sent = threading.Event()


@activity.defn
def ignores_cancellation() -> None:
    """A sync activity that heartbeats on after its attempt was cancelled."""
    activity.heartbeat("before")
    release.wait(10)
    activity.heartbeat("after")
    after_sent.set()


REGISTRY = ActivityRegistry([declines, succeeds, beats_from_a_thread, ignores_cancellation])


def _task(activity_type: str, **fields: Any) -> ActivityTask:
    return ActivityTask("wf", "run", "T", 1, 1, activity_type, "q", (), 0, 0, 0, **fields)


async def _run(
    task: ActivityTask, on_heartbeat: Any = None, cancelled: asyncio.Event | None = None
) -> AttemptOutcome:
    return await run_activity(
        REGISTRY,
        task,
        on_heartbeat=on_heartbeat or (lambda _details: None),
        cancelled=cancelled or asyncio.Event(),
        cancel_grace_s=0.1,
    )


async def _attempt(
    defn: Any, cancelled: asyncio.Event | None = None, **options: Any
) -> AttemptOutcome:
    """One attempt of the activity ``defn`` alone in its registry, heartbeats dropped."""
    name = defn.__name__
    return await run_activity(
        ActivityRegistry([defn]),
        _task(name),
        on_heartbeat=lambda _d: None,
        cancelled=cancelled or asyncio.Event(),
        **options,
    )


async def test_an_application_error_with_details_it_cannot_encode_keeps_its_type() -> None:
    """Its details failing to encode turned a non-retryable `Declined` into a retryable
    `TypeError`: the card was charged again on every retry."""
    report = await _run(_task("declines"))

    assert isinstance(report, ActivityFailedReport)
    failure = report.failure
    assert (failure.type, failure.non_retryable, failure.details) == ("Declined", True, ())
    assert failure.message.startswith("card declined")
    assert "details" in failure.message and "Opaque" in failure.message  # says what was lost


async def test_heartbeat_details_it_cannot_decode_fail_the_attempt_instead_of_raising() -> None:
    """The previous attempt's details came from a converter (a codec) this worker lacks."""
    task = _task("succeeds", heartbeat_details=(Payload("binary/encrypted", b"?"),))

    report = await _run(task)

    assert isinstance(report, ActivityFailedReport)
    assert "binary/encrypted" in report.failure.message


async def test_heartbeats_from_another_thread_of_an_async_activity_reach_the_loop() -> None:
    """The worker's heartbeat handling uses the loop (timers for held-back details): called
    in the activity's own thread, it raised "no running event loop" in the activity."""
    loop_thread = threading.get_ident()
    beats: list[int] = []

    report = await _run(
        _task("beats_from_a_thread"), on_heartbeat=lambda _d: beats.append(threading.get_ident())
    )

    assert isinstance(report, ActivityCompletedReport)
    await asyncio.sleep(0.05)
    assert beats == [loop_thread] * 3


async def test_heartbeats_after_the_attempt_ended_are_dropped() -> None:
    """A sync activity cannot be stopped: once its attempt is over (cancelled, its grace
    to stop gone, reported) its heartbeats are about an attempt no longer running here."""
    release.clear()
    after_sent.clear()
    beats: list[tuple[Payload, ...]] = []
    cancelled = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, cancelled.set)

    report = await _run(_task("ignores_cancellation"), beats.append, cancelled)

    assert isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    release.set()
    assert await asyncio.to_thread(after_sent.wait, 5)
    await asyncio.sleep(0.05)  # what the thread handed to the loop has run
    assert len(beats) == 1  # "before"; "after" came once the attempt was over


@activity.defn
async def reads_its_info() -> dict[str, Any]:
    info = activity.info()
    return {
        "workflow_run_id": info.workflow_run_id,
        "activity_id": info.activity_id,
        "heartbeat_timeout": info.heartbeat_timeout,
        "start_to_close_timeout": info.start_to_close_timeout,
        "schedule_to_close_timeout": info.schedule_to_close_timeout,
        "scheduled_time": info.scheduled_time,
        "current_attempt_scheduled_time": info.current_attempt_scheduled_time,
        "started_after_scheduled": info.started_time >= info.scheduled_time,
        "is_local": info.is_local,
    }


async def test_activity_info_has_the_fields_temporal_code_reads() -> None:
    """Temporal's documented idempotency key is ``workflow_run_id`` + ``activity_id``, and
    activities read their timeouts: code moved over by changing imports raised
    AttributeError on each."""
    registry = ActivityRegistry([reads_its_info])
    task = ActivityTask(
        "wf", "run-7", "T", 3, 2, "reads_its_info", "q", (), 3_000, 30_000, 5_000,
        first_scheduled_time_ms=1_000, schedule_to_close_timeout_ms=60_000,
    )  # fmt: skip

    info = await _info_of(registry, task)

    assert info == {
        "workflow_run_id": "run-7",
        "activity_id": "3",
        "heartbeat_timeout": "5s",  # timedeltas travel as duration text
        "start_to_close_timeout": "30s",
        "schedule_to_close_timeout": "60s",
        "scheduled_time": "1970-01-01T00:00:01+00:00",
        "current_attempt_scheduled_time": "1970-01-01T00:00:03+00:00",
        "started_after_scheduled": True,
        "is_local": False,
    }


async def test_a_task_from_before_the_first_schedule_time_reports_its_attempts() -> None:
    """A task record written before it carried the first schedule (the field's default,
    0) gives this attempt's schedule time, not 1970, and no schedule-to-close timeout."""
    registry = ActivityRegistry([reads_its_info])
    task = ActivityTask("wf", "run-7", "T", 3, 2, "reads_its_info", "q", (), 3_000, 0, 0)

    info = await _info_of(registry, task)

    assert info["scheduled_time"] == info["current_attempt_scheduled_time"]
    assert info["schedule_to_close_timeout"] is None


async def _info_of(registry: ActivityRegistry, task: ActivityTask) -> dict[str, Any]:
    """What ``reads_its_info`` returned for ``task``."""
    report = await run_activity(
        registry, task, on_heartbeat=lambda _d: None, cancelled=asyncio.Event()
    )
    assert isinstance(report, ActivityCompletedReport)
    info: dict[str, Any] = registry.converter.decode_one(report.result)
    return info


@activity.defn
def stops_when_told() -> str:
    """A sync activity that checks `activity.is_cancelled()` and cleans up."""
    while not activity.is_cancelled():
        time.sleep(0.01)
    time.sleep(0.1)  # its cleanup
    stopped.set()
    return "stopped"


stopped = threading.Event()


async def test_a_cancelled_sync_activity_that_stops_in_its_grace_ends_its_attempt() -> None:
    stopped.clear()
    cancelled = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, cancelled.set)

    abandoned: list[bool] = []

    report = await _attempt(
        stops_when_told, cancelled, cancel_grace_s=5, on_abandoned=lambda: abandoned.append(True)
    )

    assert stopped.is_set()  # the attempt ended after the activity did, not before
    assert isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    assert abandoned == []


async def test_an_attempt_ended_with_its_activity_still_running_tells_the_host() -> None:
    """Only the host knows whether a thread left running matters — a stopping worker logs
    each attempt it gives up on — so the executor says when it leaves one."""
    release.clear()
    cancelled = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, cancelled.set)
    abandoned: list[bool] = []

    report = await run_activity(
        REGISTRY,
        _task("ignores_cancellation"),
        on_heartbeat=lambda _d: None,
        cancelled=cancelled,
        cancel_grace_s=0.1,
        on_abandoned=lambda: abandoned.append(True),
    )
    release.set()

    assert isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    assert abandoned == [True]


ran: list[str] = []


@activity.defn
def records_that_it_ran() -> None:
    ran.append("ran")


async def test_a_sync_activity_cancelled_before_its_thread_took_it_never_runs() -> None:
    """Waiting for a cancelled sync activity to stop must not start one that had not: its
    pool was busy, and it would have run its side effects for a cancelled attempt."""
    ran.clear()
    pool = ThreadPoolExecutor(max_workers=1)
    busy = threading.Event()
    pool.submit(busy.wait, 5)  # the only thread is taken
    cancelled = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, cancelled.set)
    loop.call_later(0.1, busy.set)  # the thread frees up within the grace

    report = await _attempt(records_that_it_ran, cancelled, executor=pool, cancel_grace_s=1)

    pool.shutdown(wait=True)
    assert isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    assert ran == []


@activity.defn
async def wraps_an_exception() -> None:
    try:
        raise ValueError("no such account")
    except ValueError as error:
        raise ApplicationError(error, type="NoAccount", non_retryable=True) from error  # type: ignore[arg-type]


async def test_an_application_error_made_from_an_exception_is_reported() -> None:
    """``ApplicationError(error)`` (the exception, not its text) could not be encoded into
    the report: the worker logged a crash and sent nothing, and the workflow waited for the
    attempt's timeout, then ran it again."""
    report = await _attempt(wraps_an_exception)

    assert isinstance(report, ActivityFailedReport)
    assert (report.failure.message, report.failure.type) == ("no such account", "NoAccount")
    assert serde.decode_inbox(serde.encode_inbox(report)) == report


@activity.defn
async def ignores_its_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await asyncio.Event().wait()


async def test_a_host_whose_clock_passed_the_grace_first_ends_the_attempt_then() -> None:
    """The in-memory environment skips time: its grace ends when virtual time passed it."""
    cancelled, grace_ended = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, cancelled.set)
    loop.call_later(0.1, grace_ended.set)
    began = time.monotonic()

    report = await _attempt(ignores_its_cancel, cancelled, grace_ended=grace_ended)

    assert isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    assert time.monotonic() - began < 2.5  # not the real 5 s grace
