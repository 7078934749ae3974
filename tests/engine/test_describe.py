"""`describe()`: a run's status and what it waits on — activities, timers, children.

Each test runs live and restored from history at every message (the ``env`` fixture): what
describe reports is rebuilt from the history alone, so both must answer the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from runtime import ApplicationError, RetryPolicy, activity, workflow
from runtime.client import WorkflowExecutionDescription, WorkflowHandle
from runtime.converter import DataConverter
from runtime.messages import PendingActivityState, StatusRecord, WorkflowStatus
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

RETRY = RetryPolicy(initial_interval=timedelta(minutes=1), backoff_coefficient=1.0,
                    maximum_attempts=5)  # fmt: skip


@activity.defn
async def flaky(item: str) -> str:
    attempt = activity.info().attempt
    if attempt < 3:
        raise ApplicationError(f"attempt {attempt} of {item} failed", type="Flaky")
    return item


@workflow.defn
async def nap(hours: int) -> None:
    await workflow.sleep(timedelta(hours=hours))


@workflow.defn
async def busy(item: str) -> str:
    """Waits on an activity, a timer and a child at once."""
    results = await asyncio.gather(
        workflow.execute_activity(
            flaky,
            item,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=RETRY,
        ),
        workflow.sleep(timedelta(minutes=30)),
        workflow.execute_child_workflow(nap, 1, id=f"{workflow.info().workflow_id}-nap"),
    )
    return str(results[0])


async def _described_once(
    handle: WorkflowHandle, ready: Callable[[WorkflowExecutionDescription], bool]
) -> WorkflowExecutionDescription:
    """The first description ``ready`` accepts (virtual time stands still meanwhile)."""
    for _ in range(500):
        description = await handle.describe()
        if ready(description):
            return description
        await asyncio.sleep(0.01)
    raise AssertionError(f"never ready: {description}")


def _in_backoff(attempt: int) -> Callable[[WorkflowExecutionDescription], bool]:
    def ready(description: WorkflowExecutionDescription) -> bool:
        """The activity waits for the attempt after ``attempt``, and the child started."""
        backing_off = [
            a
            for a in description.pending_activities
            if a.state is PendingActivityState.BACKOFF and a.attempt == attempt
        ]
        started = [c for c in description.pending_children if c.run_id is not None]
        return bool(backing_off) and bool(started)

    return ready


async def test_describe_reports_the_activity_timer_and_child_a_run_waits_on(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[busy, nap], activities=[flaky]):
        started_ms = env.service.now_ms
        handle = await env.client.start_workflow(busy, "box", id="busy-1", task_queue="q")
        first = await _described_once(handle, _in_backoff(1))

        assert isinstance(first, StatusRecord)  # what describe() returned before
        assert first.status is WorkflowStatus.RUNNING and first.workflow_type == "busy"
        [pending] = first.pending_activities
        assert (pending.activity_type, pending.task_queue, pending.attempt) == ("flaky", "q", 1)
        assert pending.maximum_attempts == 5
        assert pending.last_failure is not None
        assert pending.last_failure.message == "attempt 1 of box failed"
        assert pending.last_failure.type == "Flaky"
        assert pending.scheduled_time_ms == pending.attempt_scheduled_time_ms == started_ms
        assert pending.expiration_time_ms == started_ms + 3_600_000
        assert pending.next_attempt_time_ms == started_ms + 60_000
        [timer] = first.pending_timers
        assert timer.fire_at_ms == started_ms + 30 * 60_000
        [child] = first.pending_children
        assert (child.workflow_id, child.workflow_type) == ("busy-1-nap", "nap")
        child_run = await env.client.get_workflow_handle("busy-1-nap").describe()
        assert child.run_id == child_run.run_id
        assert child_run.pending_timers[0].fire_at_ms == started_ms + 3_600_000

        await env.sleep(61)  # the second attempt runs, and fails too
        second = await _described_once(handle, _in_backoff(2))
        [pending] = second.pending_activities
        assert pending.attempt_scheduled_time_ms == started_ms + 60_000
        assert pending.scheduled_time_ms == started_ms  # the activity's, not the attempt's
        assert pending.last_failure is not None
        assert pending.last_failure.message == "attempt 2 of box failed"
        assert pending.next_attempt_time_ms == started_ms + 120_000

        assert await handle.result() == "box"
        closed = await handle.describe()
    assert closed.status is WorkflowStatus.COMPLETED
    assert (closed.pending_activities, closed.pending_timers, closed.pending_children) == (
        (), (), ()
    )  # fmt: skip


_release = asyncio.Event()


@activity.defn
async def long_step(item: str) -> str:
    activity.heartbeat({"done": 40})
    await _release.wait()
    return item


@workflow.defn
async def one_long_step(item: str) -> str:
    result: str = await workflow.execute_activity(
        long_step,
        item,
        start_to_close_timeout=timedelta(hours=1),
        schedule_to_start_timeout=timedelta(minutes=5),  # workers then say they started it
        heartbeat_timeout=timedelta(minutes=10),
    )
    return result


async def test_describe_reports_a_started_activity_and_its_last_heartbeat(
    env: WorkflowEnvironment,
) -> None:
    _release.clear()
    async with Worker(
        env.client, task_queue="q", workflows=[one_long_step], activities=[long_step]
    ):
        now_ms = env.service.now_ms
        handle = await env.client.start_workflow(one_long_step, "x", id="long-1", task_queue="q")

        def heartbeat_recorded(description: WorkflowExecutionDescription) -> bool:
            pending = description.pending_activities
            return bool(pending) and pending[0].last_heartbeat_time_ms is not None

        described = await _described_once(handle, heartbeat_recorded)
        [pending] = described.pending_activities
        assert pending.state is PendingActivityState.STARTED
        assert pending.last_started_time_ms == pending.last_heartbeat_time_ms == now_ms
        assert pending.last_failure is None and pending.next_attempt_time_ms is None
        assert pending.expiration_time_ms is None  # no schedule-to-close timeout
        details = DataConverter().decode(pending.heartbeat_details)
        assert details == [{"done": 40}]
        _release.set()
        assert await handle.result() == "x"
