"""The patching lifecycle: `patched`, then `deprecate_patch`, then no call at all.

Each stage's code must replay the histories the stage before it recorded, and a worker
still running the previous stage (a rolling deploy, a rollback) must replay what the new
stage records.
"""

from __future__ import annotations

import asyncio

import pytest

from runtime import NonDeterminismError, Replayer, workflow
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.engine.patches import is_deprecated_patch_marker, is_patch_marker
from runtime.events import HistoryEvent, MarkerRecorded, WorkflowCompleted
from runtime.messages import SignalWorkflow
from runtime.testing import WorkflowEnvironment
from tests.engine.steps import STEPS, T, step_a, step_b, step_c, step_d
from workers.worker import Worker


@workflow.defn(name="flow")
async def flow_v1() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
    return str(a + b)


@workflow.defn(name="flow")
async def flow_patched() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    if workflow.patched("use-c"):
        b = await workflow.execute_activity(step_c, start_to_close_timeout=T)
    else:
        b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
    return str(a + b)


@workflow.defn(name="flow")
async def flow_deprecated() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    workflow.deprecate_patch("use-c")
    b = await workflow.execute_activity(step_c, start_to_close_timeout=T)
    return str(a + b)


@workflow.defn(name="flow")
async def flow_removed() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    b = await workflow.execute_activity(step_c, start_to_close_timeout=T)
    return str(a + b)


async def _record(env: WorkflowEnvironment, wf: object, workflow_id: str) -> list[HistoryEvent]:
    async with Worker(env.client, task_queue="q", workflows=[wf], activities=STEPS):
        assert await env.client.execute_workflow(wf, id=workflow_id, task_queue="q") in {
            "ab",
            "ac",
        }
    return list(env.histories()[workflow_id])


def _markers(history: list[HistoryEvent]) -> list[MarkerRecorded]:
    return [e.attributes for e in history if isinstance(e.attributes, MarkerRecorded)]


async def test_deprecate_patch_replays_patched_histories_and_records_a_flagged_marker(
    env: WorkflowEnvironment,
) -> None:
    old = await _record(env, flow_v1, "old")
    patched = await _record(env, flow_patched, "patched")
    [marker] = _markers(patched)
    assert is_patch_marker(marker, "use-c") and not is_deprecated_patch_marker(marker)

    # Stage 2 replays what stage 1 recorded; a run that took the old branch cannot be
    # replayed by it (those runs must be gone first, as in Temporal).
    assert Replayer([flow_deprecated]).replay_workflow(patched).error is None
    with pytest.raises(NonDeterminismError):
        Replayer([flow_deprecated]).replay_workflow(old)

    deprecated = await _record(env, flow_deprecated, "deprecated")
    [marker] = _markers(deprecated)
    assert is_patch_marker(marker, "use-c") and is_deprecated_patch_marker(marker)
    assert Replayer([flow_deprecated]).replay_workflow(deprecated).error is None
    # A worker still on `patched()` reads the flagged marker as the patch: new branch.
    assert Replayer([flow_patched]).replay_workflow(deprecated).error is None
    # Stage 3 (no call): the flagged marker is passed over ...
    assert Replayer([flow_removed]).replay_workflow(deprecated).error is None
    # ... but a marker recorded by `patched()` is not: that run's code decided on it.
    with pytest.raises(NonDeterminismError) as unflagged:
        Replayer([flow_removed]).replay_workflow(patched)
    assert "use-c" in unflagged.value.expected and "step_c" in unflagged.value.got
    # Teardown replays every history here with the registry's code: the patched stage
    # replays all three.
    env.service.registry.add(flow_patched)


async def test_removed_call_replays_its_deprecated_histories(env: WorkflowEnvironment) -> None:
    deprecated = await _record(env, flow_deprecated, "deprecated")
    removed = await _record(env, flow_removed, "removed")
    assert _markers(removed) == []
    assert Replayer([flow_removed]).replay_workflow(deprecated).error is None
    assert Replayer([flow_removed]).replay_workflow(removed).error is None
    # Rolling back to stage 2 replays a run recorded without the marker too: replaying,
    # deprecate_patch finds no marker and issues none.
    assert Replayer([flow_deprecated]).replay_workflow(removed).error is None


@workflow.defn(name="gated")
class GatedDeprecated:
    """Stage 2 of "use-c", then a wait, then a newer patch "more"."""

    def __init__(self) -> None:
        self.go = False
        self.stage = "start"

    @workflow.run
    async def run(self) -> str:
        a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
        workflow.deprecate_patch("use-c")
        c = await workflow.execute_activity(step_c, start_to_close_timeout=T)
        self.stage = "waiting"
        await workflow.wait_condition(lambda: self.go)
        if workflow.patched("more"):
            c += await workflow.execute_activity(step_d, start_to_close_timeout=T)
        return str(a + c)

    @workflow.signal
    def open(self) -> None:
        self.go = True

    @workflow.query
    def where(self) -> str:
        return self.stage


@workflow.defn(name="gated")
class GatedRemoved:
    """Stage 3 of "use-c": the call is gone; "more" is still patched."""

    def __init__(self) -> None:
        self.go = False
        self.stage = "start"

    @workflow.run
    async def run(self) -> str:
        a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
        c = await workflow.execute_activity(step_c, start_to_close_timeout=T)
        self.stage = "waiting"
        await workflow.wait_condition(lambda: self.go)
        if workflow.patched("more"):
            c += await workflow.execute_activity(step_d, start_to_close_timeout=T)
        return str(a + c)

    @workflow.signal
    def open(self) -> None:
        self.go = True

    @workflow.query
    def where(self) -> str:
        return self.stage


async def test_a_run_resumed_after_the_call_was_removed_keeps_its_later_patches(
    env: WorkflowEnvironment,
) -> None:
    """Markers after a passed-over one are matched by patch id, not by their number."""
    async with Worker(env.client, task_queue="q", workflows=[GatedDeprecated], activities=STEPS):
        handle = await env.client.start_workflow(GatedDeprecated.run, id="g", task_queue="q")
        for _ in range(1000):  # until it waits for the signal (activities run for real)
            if await handle.query(GatedDeprecated.where) == "waiting":
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the run never reached its wait")
    partial = list(env.histories()["g"])
    run_id = partial[0].run_id

    # The deploy of stage 3 restores the waiting run and takes it on from the signal.
    resumed = WorkflowInstance.restore("g", partial, WorkflowRegistry([GatedRemoved]))
    assert resumed.task_failures == []
    now = partial[-1].timestamp_ms + 1
    tail = list(resumed.handle(SignalWorkflow("g", run_id, "open", (), "sig"), now).events)
    assert [m.marker_id for m in _markers(partial + tail)] == ["use-c", "more"]
    for code in (GatedRemoved, GatedDeprecated):
        assert Replayer([code]).replay_workflow(partial + tail).error is None

    # The same through the environment (restoring per message in one of its two modes).
    async with Worker(env.client, task_queue="q", workflows=[GatedRemoved], activities=STEPS):
        await handle.signal(GatedRemoved.open)
        assert await handle.result() == "acd"
    history = env.histories()["g"]
    assert isinstance(history[-1].attributes, WorkflowCompleted)
    for code in (GatedRemoved, GatedDeprecated):
        assert Replayer([code]).replay_workflow(history).error is None
