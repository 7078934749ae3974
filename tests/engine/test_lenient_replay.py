"""Lenient replay after a task failure: it covers the stretch the stuck run recorded without
code, and ends where the fixed code's own commands were recorded."""

from __future__ import annotations

import asyncio

import pytest

from runtime import NonDeterminismError, Replayer, workflow
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import ActivityScheduled, HistoryEvent, WorkflowTaskFailed
from runtime.messages import (
    ActivityCompletedReport,
    InboxMessage,
    SignalWorkflow,
    StartWorkflow,
    TimerFiredReport,
)
from tests.engine.steps import T, step_a, step_b, step_c, step_d


@workflow.defn(name="gated")
class Gated:
    """a, then b, then waits for `open`."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
        b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
        await workflow.wait_condition(lambda: self.go)
        return str(a + b)

    @workflow.signal
    def open(self) -> None:
        self.go = True


@workflow.defn(name="gated")
class GatedBroken:
    """The deploy that failed the task: c where the history has a."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        c = await workflow.execute_activity(step_c, start_to_close_timeout=T)
        return str(c)

    @workflow.signal
    def open(self) -> None:
        self.go = True


@workflow.defn(name="gated")
class GatedExtra:
    """A later, genuinely different change: c after b, before the wait."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
        b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
        workflow.start_activity(step_c, start_to_close_timeout=T)
        await workflow.wait_condition(lambda: self.go)
        return str(a + b)

    @workflow.signal
    def open(self) -> None:
        self.go = True


V1 = WorkflowRegistry([Gated])
BROKEN = WorkflowRegistry([GatedBroken])
EXTRA = WorkflowRegistry([GatedExtra])


def _step(instance: WorkflowInstance, message: InboxMessage, now_ms: int) -> list[HistoryEvent]:
    return list(instance.handle(message, now_ms).events)


def _completed(run_id: str, seq: int, value: str) -> ActivityCompletedReport:
    return ActivityCompletedReport("g", run_id, seq, 1, V1.converter.encode_one(value))


def _started() -> tuple[list[HistoryEvent], str]:
    """A v1 run that scheduled a, restored under the broken code: its task failed."""
    v1 = WorkflowInstance.restore("g", [], V1)
    history = _step(v1, StartWorkflow("g", "gated", "q", (), "start-1"), 1_000)
    assert isinstance(history[-1].attributes, ActivityScheduled)
    run_id = history[0].run_id
    broken = WorkflowInstance.restore("g", history, BROKEN)
    assert broken.task_failures
    return history, run_id


def test_commands_of_the_stuck_stretch_are_recorded_and_then_replay_strictly() -> None:
    history, run_id = _started()
    broken = WorkflowInstance.restore("g", history, BROKEN)
    # While stuck: the task failure, then a's completion, recorded without code.
    history += _step(broken, _completed(run_id, 1, "a"), 2_000)
    assert any(isinstance(e.attributes, WorkflowTaskFailed) for e in history)
    fixed = WorkflowInstance.restore("g", history, V1)
    assert fixed.task_failures == []
    # b, owed since a completed, is recorded before this message; then b completes.
    history += _step(fixed, _completed(run_id, 2, "b"), 3_000)
    assert Replayer([Gated]).replay_workflow(history).error is None
    # A later change that schedules c after b where the recorded code waited: the history
    # was recorded by the fixed code from b on, so this is non-determinism, not leniency.
    with pytest.raises(NonDeterminismError):
        Replayer([GatedExtra]).replay_workflow(history)
    assert WorkflowInstance.restore("g", history, EXTRA).task_failures


def test_leniency_ends_even_when_fixed_code_owed_nothing() -> None:
    history, run_id = _started()
    broken = WorkflowInstance.restore("g", history, BROKEN)
    history += _step(broken, TimerFiredReport("g", run_id, "sleep:99", 0), 2_000)
    assert isinstance(history[-1].attributes, WorkflowTaskFailed)
    fixed = WorkflowInstance.restore("g", history, V1)
    assert fixed.task_failures == []
    history += _step(fixed, _completed(run_id, 1, "a"), 3_000)
    history += _step(fixed, _completed(run_id, 2, "b"), 4_000)
    assert Replayer([Gated]).replay_workflow(history).error is None
    with pytest.raises(NonDeterminismError):
        Replayer([GatedExtra]).replay_workflow(history)


def test_same_change_without_a_task_failure_is_non_determinism() -> None:
    """The baseline the two tests above hold lenient replay to."""
    v1 = WorkflowInstance.restore("g", [], V1)
    history = _step(v1, StartWorkflow("g", "gated", "q", (), "start-1"), 1_000)
    run_id = history[0].run_id
    history += _step(v1, _completed(run_id, 1, "a"), 2_000)
    history += _step(v1, _completed(run_id, 2, "b"), 3_000)
    with pytest.raises(NonDeterminismError):
        Replayer([GatedExtra]).replay_workflow(history)
    history += _step(v1, SignalWorkflow("g", None, "open", (), "sig-1"), 4_000)
    assert Replayer([Gated]).replay_workflow(history).status is not None


@workflow.defn(name="pair")
class Pair:
    """Two chains: a then c, b then d; then waits for `open`."""

    def __init__(self) -> None:
        self.go = False

    async def chain(self, first: object, then: object) -> None:
        await workflow.execute_activity(first, start_to_close_timeout=T)
        await workflow.execute_activity(then, start_to_close_timeout=T)

    @workflow.run
    async def run(self) -> None:
        await asyncio.gather(self.chain(step_a, step_c), self.chain(step_b, step_d))
        await workflow.wait_condition(lambda: self.go)

    @workflow.signal
    def open(self) -> None:
        self.go = True


@workflow.defn(name="pair")
class PairBroken:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(step_d, start_to_close_timeout=T)

    @workflow.signal
    def open(self) -> None:
        self.go = True


@workflow.defn(name="pair")
class PairAlsoA:
    """A later change in the stretch itself: a second a after d."""

    def __init__(self) -> None:
        self.go = False

    async def chain(self, first: object, then: object) -> None:
        await workflow.execute_activity(first, start_to_close_timeout=T)
        await workflow.execute_activity(then, start_to_close_timeout=T)

    async def b_d_and_a(self) -> None:
        await workflow.execute_activity(step_b, start_to_close_timeout=T)
        d = workflow.start_activity(step_d, start_to_close_timeout=T)
        workflow.start_activity(step_a, start_to_close_timeout=T)
        await d

    @workflow.run
    async def run(self) -> None:
        await asyncio.gather(self.chain(step_a, step_c), self.b_d_and_a())
        await workflow.wait_condition(lambda: self.go)

    @workflow.signal
    def open(self) -> None:
        self.go = True


def test_commands_owed_beyond_the_block_the_fixed_code_recorded_are_non_determinism() -> None:
    """What the fixed code owed was recorded in one block: code owing more than the block
    holds is not the code that recorded it, even where nothing is recorded after it."""
    pair = WorkflowRegistry([Pair])
    v1 = WorkflowInstance.restore("g", [], pair)
    history = _step(v1, StartWorkflow("g", "pair", "q", (), "start-1"), 1_000)
    run_id = history[0].run_id
    broken = WorkflowInstance.restore("g", history, WorkflowRegistry([PairBroken]))
    assert broken.task_failures
    # While stuck: a and b complete; the fixed code owes c (after a) and d (after b).
    history += _step(broken, _completed(run_id, 1, "a"), 2_000)
    history += _step(broken, _completed(run_id, 2, "b"), 3_000)
    fixed = WorkflowInstance.restore("g", history, pair)
    assert fixed.task_failures == []
    history += _step(fixed, TimerFiredReport("g", run_id, "sleep:99", 0), 4_000)
    owed = [e.attributes for e in history[-2:]]
    assert [a.activity_type for a in owed if isinstance(a, ActivityScheduled)] == [
        "step_c",
        "step_d",
    ]
    assert Replayer([Pair]).replay_workflow(history).error is None
    with pytest.raises(NonDeterminismError):
        Replayer([PairAlsoA]).replay_workflow(history)
    # Before the block was recorded, the changed code is merely owed more.
    assert (
        WorkflowInstance.restore("g", history[:-2], WorkflowRegistry([PairAlsoA])).task_failures
        == []
    )
