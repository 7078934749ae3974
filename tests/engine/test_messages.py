"""Signals, queries, updates, wait_condition, cancellation, termination."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from runtime import (
    CancelledError,
    TerminatedError,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    activity,
    workflow,
)
from runtime.events import ActivityCancelRequested, TimerCancelled
from runtime.messages import WorkflowStatus
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker


@workflow.defn
class Approval:
    def __init__(self) -> None:
        self.approvers: list[str] = []
        self.limit = 2

    @workflow.run
    async def run(self, request_id: str) -> str:
        await workflow.wait_condition(lambda: len(self.approvers) >= self.limit)
        return f"{request_id} approved by {','.join(self.approvers)}"

    @workflow.signal
    def approve(self, by: str) -> None:
        self.approvers.append(by)

    @workflow.query
    def status(self) -> str:
        return f"{len(self.approvers)}/{self.limit}"

    @workflow.update
    def set_limit(self, limit: int) -> int:
        previous, self.limit = self.limit, limit
        return previous

    @set_limit.validator  # type: ignore[attr-defined, untyped-decorator]
    def check_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")


async def test_signals_queries_and_updates(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Approval]):
        handle = await env.client.start_workflow(Approval.run, "r-1", id="ap-1", task_queue="q")
        await handle.signal(Approval.approve, "alice")
        assert await handle.query(Approval.status) == "1/2"
        with pytest.raises(WorkflowUpdateFailedError, match="limit must be positive"):
            await handle.execute_update(Approval.set_limit, 0)
        assert await handle.execute_update(Approval.set_limit, 3) == 2
        assert await handle.query(Approval.status) == "1/3"
        await handle.signal(Approval.approve, "bob")
        await handle.signal("approve", "carol")
        assert await handle.result() == "r-1 approved by alice,bob,carol"
        # Queries still answer from the closed run's state.
        assert await handle.query(Approval.status) == "3/3"


@workflow.defn
class Deadline:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, seconds: float) -> str:
        try:
            await workflow.wait_condition(lambda: self.done, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            return f"timed out at +{(workflow.now() - workflow.info().start_time).total_seconds()}"
        return "done"

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def test_wait_condition_with_timeout(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Deadline]):
        assert (
            await env.client.execute_workflow(Deadline.run, 60, id="d-1", task_queue="q")
            == "timed out at +60.0"
        )
        handle = await env.client.start_workflow(Deadline.run, 3600, id="d-2", task_queue="q")
        await handle.signal(Deadline.finish)
        assert await handle.result() == "done"
        history = await handle.fetch_history()
    assert any(isinstance(e.attributes, TimerCancelled) for e in history)


cancel_seen: list[str] = []


@activity.defn
async def long_running() -> None:
    try:
        await asyncio.Event().wait()
    finally:
        cancel_seen.append("activity")


@workflow.defn
async def cancellable(kind: str) -> None:
    try:
        if kind == "activity":
            await workflow.execute_activity(long_running, start_to_close_timeout=timedelta(hours=1))
        else:
            await workflow.sleep(timedelta(days=1))
    except asyncio.CancelledError:
        cancel_seen.append(f"workflow:{kind}")
        raise


@pytest.mark.parametrize("kind", ["activity", "timer"])
async def test_cancellation_reaches_awaited_activities_and_timers(
    env: WorkflowEnvironment, kind: str
) -> None:
    cancel_seen.clear()
    async with Worker(
        env.client, task_queue="q", workflows=[cancellable], activities=[long_running]
    ):
        handle = await env.client.start_workflow(cancellable, kind, id=f"cx-{kind}", task_queue="q")
        await env.sleep(timedelta(seconds=1))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        for _ in range(100):
            if kind == "timer" or "activity" in cancel_seen:
                break
            await asyncio.sleep(0.01)
    assert isinstance(info.value.cause, CancelledError)
    assert f"workflow:{kind}" in cancel_seen
    history = await handle.fetch_history()
    expected = ActivityCancelRequested if kind == "activity" else TimerCancelled
    assert any(isinstance(e.attributes, expected) for e in history)
    if kind == "activity":
        assert "activity" in cancel_seen
    assert (await handle.describe()).status is WorkflowStatus.CANCELLED


async def test_terminate(env: WorkflowEnvironment) -> None:
    async with Worker(
        env.client, task_queue="q", workflows=[cancellable], activities=[long_running]
    ):
        handle = await env.client.start_workflow(cancellable, "timer", id="term", task_queue="q")
        await handle.terminate("enough")
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert isinstance(info.value.cause, TerminatedError)
    assert (await handle.describe()).status is WorkflowStatus.TERMINATED


@workflow.defn
class Closes:
    def __init__(self) -> None:
        self.finish = False
        self.waiting_updates = 0

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.finish)
        return "closed"

    @workflow.signal
    def close_now(self) -> None:
        self.finish = True

    @workflow.query
    def waiting(self) -> int:
        return self.waiting_updates

    @workflow.update
    async def never_done(self) -> None:
        self.waiting_updates += 1
        await workflow.wait_condition(lambda: False)


async def test_an_update_still_running_when_the_run_closes_fails_at_once(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Closes]):
        handle = await env.client.start_workflow(Closes.run, id="closes", task_queue="q")
        update = asyncio.create_task(handle.execute_update(Closes.never_done))
        await asyncio.sleep(0.05)  # the update is sent, accepted and its handler waits
        assert await handle.query(Closes.waiting) == 1
        await handle.signal(Closes.close_now)
        assert await handle.result() == "closed"
        with pytest.raises(WorkflowUpdateFailedError, match=r"closed \(completed\) before update"):
            await asyncio.wait_for(update, 5)


@workflow.defn
class SlowUpdate:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def take_an_hour(self) -> str:
        await workflow.sleep(timedelta(hours=1))
        return "done"


async def test_an_update_may_run_longer_than_the_rpc_timeout(env: WorkflowEnvironment) -> None:
    """An update is answered when its handler completes, however long it runs: the caller
    waits without the RPC timeout, re-asking as for a result (time skips meanwhile here)."""
    async with Worker(env.client, task_queue="q", workflows=[SlowUpdate]):
        handle = await env.client.start_workflow(SlowUpdate.run, id="slow-u", task_queue="q")
        env.client.rpc_timeout = 1.0
        assert await handle.execute_update(SlowUpdate.take_an_hour) == "done"
