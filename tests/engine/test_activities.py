"""Retries, non-retryable errors, maximum attempts and the four activity timeouts."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from datetime import datetime, timedelta
from typing import Any

import pytest

from runtime import (
    ActivityError,
    ApplicationError,
    RetryPolicy,
    TimeoutError,
    WorkflowFailureError,
    activity,
    workflow,
)
from runtime.converter import DataConverter
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.messages import (
    ActivityFailedReport,
    ActivityTask,
    StartWorkflow,
    TimerFiredReport,
)
from runtime.payloads import Failure
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

attempts: list[int] = []


@activity.defn
async def flaky() -> int:
    info = activity.info()
    attempts.append(info.attempt)
    if info.attempt < 3:
        raise RuntimeError(f"boom {info.attempt}")
    return info.attempt


@workflow.defn
async def retrying() -> tuple[int, float]:
    start = workflow.now()
    attempt = await workflow.execute_activity(
        flaky,
        start_to_close_timeout=timedelta(seconds=10),
        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2),
    )
    return attempt, (workflow.now() - start).total_seconds()


async def test_retry_with_backoff_moves_the_workflow_clock(env: WorkflowEnvironment) -> None:
    attempts.clear()
    async with Worker(env.client, task_queue="q", workflows=[retrying], activities=[flaky]):
        attempt, elapsed = await env.client.execute_workflow(retrying, id="r", task_queue="q")
    assert attempts == [1, 2, 3]
    assert attempt == 3
    assert elapsed >= 3.0


@activity.defn
async def declines(kind: str) -> None:
    attempts.append(activity.info().attempt)
    if kind == "flag":
        raise ApplicationError("card declined", non_retryable=True)
    raise ApplicationError("card declined", type="Declined")


@workflow.defn
async def charge(kind: str, max_attempts: int) -> str:
    try:
        await workflow.execute_activity(
            declines,
            kind,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(
                maximum_attempts=max_attempts,
                non_retryable_error_types=["Declined"] if kind == "type" else [],
            ),
        )
    except ActivityError as err:
        assert isinstance(err.cause, ApplicationError)
        return f"{err.cause.message}/{err.cause.type}"
    return "ok"


@pytest.mark.parametrize("kind", ["flag", "type"])
async def test_non_retryable_errors_stop_at_once(env: WorkflowEnvironment, kind: str) -> None:
    attempts.clear()
    async with Worker(env.client, task_queue="q", workflows=[charge], activities=[declines]):
        result = await env.client.execute_workflow(charge, kind, 0, id=f"c-{kind}", task_queue="q")
    assert attempts == [1]
    assert result.startswith("card declined/")


async def test_maximum_attempts_is_honoured(env: WorkflowEnvironment) -> None:
    attempts.clear()
    async with Worker(env.client, task_queue="q", workflows=[charge], activities=[declines]):
        result = await env.client.execute_workflow(
            charge, "retryable", 4, id="c-max", task_queue="q"
        )
    assert attempts == [1, 2, 3, 4]
    assert result == "card declined/Declined"


@activity.defn
async def hangs() -> None:
    await asyncio.Event().wait()


@activity.defn
async def beats_once() -> None:
    activity.heartbeat("started")
    await asyncio.Event().wait()


@workflow.defn
async def timeouts(kind: str) -> str:
    options: dict[str, Any] = {"retry_policy": RetryPolicy(maximum_attempts=2)}
    target: Any = hangs
    if kind == "start_to_close":
        options["start_to_close_timeout"] = timedelta(seconds=5)
    elif kind == "heartbeat":
        target = beats_once
        options.update(
            start_to_close_timeout=timedelta(hours=1), heartbeat_timeout=timedelta(seconds=2)
        )
    elif kind == "schedule_to_start":
        options.update(
            task_queue="nobody-polls",
            start_to_close_timeout=timedelta(seconds=5),
            schedule_to_start_timeout=timedelta(seconds=7),
        )
    else:
        options.update(schedule_to_close_timeout=timedelta(seconds=10))
    try:
        await workflow.execute_activity(target, **options)
    except ActivityError as err:
        cause = err.cause
        if isinstance(cause, TimeoutError):
            return cause.type
        return f"not a timeout: {cause!r}"
    return "completed"


@pytest.mark.parametrize(
    "kind", ["start_to_close", "heartbeat", "schedule_to_start", "schedule_to_close"]
)
async def test_each_timeout_kind_surfaces_as_timeout_error(
    env: WorkflowEnvironment, kind: str
) -> None:
    async with Worker(
        env.client, task_queue="q", workflows=[timeouts], activities=[hangs, beats_once]
    ):
        result = await env.client.execute_workflow(timeouts, kind, id=f"to-{kind}", task_queue="q")
    assert result == kind


@activity.defn
def resumable(total: int) -> int:  # a sync activity, heartbeating from its thread
    info = activity.info()
    done = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
    for step in range(done, total):
        activity.heartbeat(step + 1)
        if info.attempt == 1 and step == 2:
            raise RuntimeError("crash mid-way")
    return done * 100 + info.attempt


@workflow.defn
async def resumes() -> int:
    result: int = await workflow.execute_activity(
        resumable,
        5,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_attempts=2),
    )
    return result


async def test_heartbeat_details_reach_the_next_attempt(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[resumes], activities=[resumable]):
        result = await env.client.execute_workflow(resumes, id="resume", task_queue="q")
    assert result == 3 * 100 + 2


@workflow.defn
async def thirty_days() -> list[datetime]:
    before = workflow.now()
    await workflow.sleep(timedelta(days=30))
    return [before, workflow.now()]


async def test_thirty_day_sleep_completes_under_time_skipping(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[thirty_days]):
        before, after = await env.client.execute_workflow(
            thirty_days, id="sleepy", task_queue="q", result_type=list[datetime]
        )
    assert after - before == timedelta(days=30)


@workflow.defn
async def asyncio_style() -> float:
    start = workflow.now()
    await asyncio.gather(asyncio.sleep(60), workflow.sleep(timedelta(minutes=2)))
    with contextlib.suppress(builtins.TimeoutError):
        await asyncio.wait_for(asyncio.sleep(3600), timeout=10)
    return (workflow.now() - start).total_seconds()


async def test_asyncio_sleep_gather_and_wait_for_are_durable(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[asyncio_style]):
        elapsed = await env.client.execute_workflow(asyncio_style, id="aio", task_queue="q")
    assert elapsed == 130.0


@workflow.defn
async def unknown_activity() -> None:
    await workflow.execute_activity(
        "no_such_activity",
        start_to_close_timeout=timedelta(seconds=1),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )


async def test_unregistered_activity_fails_with_its_name(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[unknown_activity]):
        with pytest.raises(WorkflowFailureError) as info:
            await env.client.execute_workflow(unknown_activity, id="ua", task_queue="q")
    assert isinstance(info.value.cause, ActivityError)
    assert "no_such_activity" in str(info.value.cause.cause)


gates: dict[str, asyncio.Event] = {}


@activity.defn
async def waits_for_release() -> str:
    await gates["release"].wait()
    return "done"


@workflow.defn
async def slow_to_finish() -> str:
    result: str = await workflow.execute_activity(
        waits_for_release,
        schedule_to_start_timeout=timedelta(seconds=1),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )
    return result


async def test_schedule_to_start_ends_when_the_activity_starts(env: WorkflowEnvironment) -> None:
    """A started activity may run past its schedule-to-start timeout: the task asks the
    worker to report the start, which disarms that deadline."""
    released = gates["release"] = asyncio.Event()
    async with Worker(
        env.client, task_queue="q", workflows=[slow_to_finish], activities=[waits_for_release]
    ):
        handle = await env.client.start_workflow(slow_to_finish, id="s2s", task_queue="q")
        await env.sleep(timedelta(seconds=5))  # the activity runs, 4 s past schedule-to-start
        released.set()
        assert await handle.result() == "done"
        kinds = [type(event.attributes).__name__ for event in await handle.fetch_history()]
    assert "ActivityStarted" in kinds


def test_a_task_carries_the_schedule_to_close_deadline_of_its_first_schedule() -> None:
    """Every attempt's task names the same deadline, so a worker stops it in time."""
    instance = WorkflowInstance("w", WorkflowRegistry([timeouts]))
    start = StartWorkflow("w", "timeouts", "q", DataConverter().encode(["schedule_to_close"]), "r")
    [first] = instance.handle(start, 1_000).tasks
    assert isinstance(first, ActivityTask) and first.close_deadline_ms == 1_000 + 10_000

    failed = ActivityFailedReport("w", first.run_id, first.seq, 1, Failure("boom"))
    [retry_timer] = instance.handle(failed, 2_000).timers
    fired = TimerFiredReport("w", first.run_id, retry_timer.timer_id, retry_timer.fire_at_ms)
    [second] = instance.handle(fired, retry_timer.fire_at_ms).tasks
    assert isinstance(second, ActivityTask) and second.attempt == 2
    assert second.close_deadline_ms == 1_000 + 10_000
    assert (second.first_scheduled_time_ms, second.schedule_to_close_timeout_ms) == (1_000, 10_000)
    assert second.scheduled_time_ms == retry_timer.fire_at_ms


seen: list[activity.ActivityInfo] = []


@activity.defn
async def fails_its_first_attempt() -> None:
    seen.append(activity.info())
    if activity.info().attempt == 1:
        raise RuntimeError("first attempt")


@workflow.defn
async def retried_once() -> None:
    await workflow.execute_activity(
        fails_its_first_attempt,
        schedule_to_close_timeout=timedelta(minutes=5),
        start_to_close_timeout=timedelta(seconds=10),
        heartbeat_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2)),
    )


async def test_activity_info_tells_the_first_schedule_from_this_attempts(
    env: WorkflowEnvironment,
) -> None:
    """As in Temporal, `scheduled_time` is the activity's first schedule and
    `current_attempt_scheduled_time` the attempt's: code measuring how long an activity
    has been trying (against its schedule-to-close timeout) read the latest attempt's."""
    seen.clear()
    async with Worker(
        env.client, task_queue="q", workflows=[retried_once], activities=[fails_its_first_attempt]
    ):
        await env.client.execute_workflow(retried_once, id="info", task_queue="q")
    first, second = seen
    assert first.current_attempt_scheduled_time == first.scheduled_time
    assert second.scheduled_time == first.scheduled_time
    assert second.current_attempt_scheduled_time - first.scheduled_time >= timedelta(seconds=2)
    timeouts = (
        second.schedule_to_close_timeout,
        second.start_to_close_timeout,
        second.heartbeat_timeout,
    )
    assert timeouts == (timedelta(minutes=5), timedelta(seconds=10), timedelta(seconds=30))


@workflow.defn
async def naps_then_retries() -> None:
    await workflow.sleep(timedelta(hours=1))
    await workflow.execute_activity(
        fails_its_first_attempt,
        start_to_close_timeout=timedelta(seconds=10),
        retry_policy=RetryPolicy(initial_interval=timedelta(minutes=5)),
    )


async def test_activity_info_times_follow_the_virtual_clock(env: WorkflowEnvironment) -> None:
    """`started_time` read the wall clock while the scheduled times were the environment's:
    with an hour skipped, an attempt seemed to start an hour before it was scheduled."""
    seen.clear()
    start = env.now()
    async with Worker(
        env.client,
        task_queue="q",
        workflows=[naps_then_retries],
        activities=[fails_its_first_attempt],
    ):
        await env.client.execute_workflow(naps_then_retries, id="clock", task_queue="q")
    first, second = seen
    assert first.started_time == start + timedelta(hours=1)
    assert second.started_time == start + timedelta(hours=1, minutes=5)
    assert [i.current_attempt_scheduled_time for i in seen] == [i.started_time for i in seen]
