"""Signals, queries, updates, wait_condition, cancellation, termination."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from runtime import (
    CancelledError,
    DataConverter,
    TerminatedError,
    UnknownSignalError,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    activity,
    workflow,
)
from runtime.engine.instance import WorkflowInstance
from runtime.engine.registry import WorkflowRegistry
from runtime.events import (
    ActivityCancelRequested,
    ExternalSignalSent,
    HistoryEvent,
    SignalReceived,
    TimerCancelled,
    WorkflowStarted,
)
from runtime.messages import QueryWorkflow, RequestFailed, SignalWorkflow, WorkflowStatus
from runtime.replay import Replayer
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


async def test_a_signal_without_a_handler_is_refused_and_nothing_is_recorded(
    env: WorkflowEnvironment,
) -> None:
    """A misspelled signal name used to be recorded, answered "accepted" and dropped by the
    worker with a log line: the operator who typed it never learnt. Handlers are declared on
    the class (nothing registers one later, as Temporal's dynamic handlers would), so such a
    signal can never be delivered: the sender is told, by name, and the run goes on."""
    async with Worker(env.client, task_queue="q", workflows=[Approval]):
        handle = await env.client.start_workflow(Approval.run, "r-9", id="ap-9", task_queue="q")
        with pytest.raises(UnknownSignalError) as refused:
            await handle.signal("aprove", "alice")
        message = str(refused.value)
        assert "has no signal 'aprove'" in message and "did you mean 'approve'?" in message
        assert "'ap-9'" in message and "nothing was recorded" in message
        await handle.signal(Approval.approve, "bob")
        await handle.signal(Approval.approve, "carol")
        assert await handle.result() == "r-9 approved by bob,carol"
        signals = [
            e.attributes.signal_name
            for e in await handle.fetch_history()
            if isinstance(e.attributes, SignalReceived)
        ]
    assert signals == ["approve", "approve"]


@workflow.defn
async def takes_no_signals() -> None:
    await workflow.sleep(timedelta(hours=1))


@workflow.defn
async def signals_another(target: str) -> None:
    await workflow.get_external_workflow_handle(target).signal("no_such_signal", 1)


async def test_a_function_workflow_refuses_signals_also_from_another_workflow(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[takes_no_signals, signals_another]):
        target = await env.client.start_workflow(takes_no_signals, id="deaf", task_queue="q")
        with pytest.raises(UnknownSignalError, match=r"its signals: none\)"):
            await target.signal("anything")
        # The sending workflow is not failed (an external signal is fire and forget), and
        # the target records nothing.
        await env.client.execute_workflow(signals_another, "deaf", id="sender", task_queue="q")
        sender = env.client.get_workflow_handle("sender")
        sent = [e.attributes for e in await sender.fetch_history()]
        assert any(isinstance(a, ExternalSignalSent) for a in sent)
        await env.sleep(timedelta(seconds=1))
        received = [e.attributes for e in await target.fetch_history()]
    assert not any(isinstance(a, SignalReceived) for a in received)


_ARGS = tuple(DataConverter().encode(["r"]))


def test_a_recorded_signal_the_code_has_no_handler_for_still_replays() -> None:
    """A history recorded before the refusal (or by code that had the handler) keeps
    replaying: the recorded signal is dropped there, with a warning."""
    history = [
        HistoryEvent("old", "r1", 1, 1000, WorkflowStarted("Approval", "q", _ARGS, "s")),
        HistoryEvent("old", "r1", 2, 1001, SignalReceived("aprove", (), "sig-1")),
    ]
    result = Replayer([Approval]).replay_workflow(history, raise_on_error=False)
    assert result.error is None and result.status is WorkflowStatus.RUNNING


def test_a_repeated_signal_recorded_before_is_accepted_not_refused() -> None:
    """Dedup comes first: a re-sent request whose first copy was recorded stays accepted."""
    history = [
        HistoryEvent("w", "r1", 1, 1000, WorkflowStarted("Approval", "q", _ARGS, "s")),
        HistoryEvent("w", "r1", 2, 1001, SignalReceived("aprove", (), "sig-1")),
    ]
    instance = WorkflowInstance.restore("w", history, WorkflowRegistry([Approval]))
    again = instance.handle(SignalWorkflow("w", None, "aprove", (), "sig-1", "c"), 2000)
    assert again.events == [] and not any(isinstance(r.body, RequestFailed) for r in again.replies)
    fresh = instance.handle(SignalWorkflow("w", None, "aprove", (), "sig-2", "c"), 2001)
    [refused] = [r.body for r in fresh.replies]
    assert fresh.events == [] and isinstance(refused, RequestFailed)
    query = instance.handle(QueryWorkflow("w", None, "statsu", (), "q-1", "c"), 2002)
    [answer] = [r.body for r in query.replies]
    assert "has no query 'statsu'" in str(answer) and "did you mean 'status'?" in str(answer)


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
