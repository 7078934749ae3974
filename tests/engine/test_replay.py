"""Replay: determinism checks, versioning with `patched`, JSON histories, task failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import NonDeterminismError, workflow
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import ActivityScheduled, MarkerRecorded, WorkflowTaskFailed
from runtime.messages import ActivityCompletedReport, TimerFiredReport, WorkflowStatus
from runtime.replay import Replayer, history_from_json, history_to_json
from runtime.testing import WorkflowEnvironment
from tests.engine.steps import T, step_a, step_b, step_c
from workers.worker import Worker


@workflow.defn(name="pipeline")
async def pipeline_v1() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
    return str(a + b)


@workflow.defn(name="pipeline")
async def pipeline_swapped() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    c = await workflow.execute_activity(step_c, start_to_close_timeout=T)
    return str(a + c)


@workflow.defn(name="pipeline")
async def pipeline_reordered() -> str:
    b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    return str(a + b)


@workflow.defn(name="pipeline")
async def pipeline_c_first() -> str:
    c = await workflow.execute_activity(step_c, start_to_close_timeout=T)
    return str(c)


@workflow.defn(name="pipeline")
async def pipeline_removed() -> str:
    return str(await workflow.execute_activity(step_a, start_to_close_timeout=T))


@workflow.defn(name="pipeline")
async def pipeline_patched() -> str:
    a = await workflow.execute_activity(step_a, start_to_close_timeout=T)
    if workflow.patched("use-c"):
        b = await workflow.execute_activity(step_c, start_to_close_timeout=T)
    else:
        b = await workflow.execute_activity(step_b, start_to_close_timeout=T)
    return str(a + b)


async def _record(env: WorkflowEnvironment, wf: object, workflow_id: str) -> str:
    async with Worker(
        env.client, task_queue="q", workflows=[wf], activities=[step_a, step_b, step_c]
    ):
        result: str = await env.client.execute_workflow(wf, id=workflow_id, task_queue="q")
    return result


async def test_changed_workflow_body_raises_naming_the_event(env: WorkflowEnvironment) -> None:
    assert await _record(env, pipeline_v1, "p1") == "ab"
    history = env.histories()["p1"]
    Replayer([pipeline_v1]).replay_workflow(history)
    scheduled_b = next(
        e
        for e in history
        if isinstance(e.attributes, ActivityScheduled) and e.attributes.activity_type == "step_b"
    )
    scheduled_a = next(
        e
        for e in history
        if isinstance(e.attributes, ActivityScheduled) and e.attributes.activity_type == "step_a"
    )
    with pytest.raises(NonDeterminismError) as swapped:
        Replayer([pipeline_swapped]).replay_workflow(history)
    assert swapped.value.event_id == scheduled_b.event_id
    assert "step_b" in swapped.value.expected
    assert "step_c" in swapped.value.got
    with pytest.raises(NonDeterminismError) as reordered:
        Replayer([pipeline_reordered]).replay_workflow(history)
    assert reordered.value.event_id == scheduled_a.event_id
    with pytest.raises(NonDeterminismError) as removed:
        Replayer([pipeline_removed]).replay_workflow(history)
    assert removed.value.event_id == scheduled_b.event_id
    assert "WorkflowCompleted" in removed.value.got


async def test_patched_replays_old_histories_and_new_runs_take_new_branch(
    env: WorkflowEnvironment,
) -> None:
    assert await _record(env, pipeline_v1, "old") == "ab"
    Replayer([pipeline_patched]).replay_workflow(env.histories()["old"])
    env.service.registry.add(pipeline_patched)
    assert await _record(env, pipeline_patched, "new") == "ac"
    new_history = env.histories()["new"]
    assert any(isinstance(e.attributes, MarkerRecorded) for e in new_history)
    Replayer([pipeline_patched]).replay_workflow(new_history)
    with pytest.raises(NonDeterminismError):
        Replayer([pipeline_v1]).replay_workflow(new_history)


async def test_history_json_round_trip_and_file_replay(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    assert await _record(env, pipeline_v1, "j") == "ab"
    history = env.histories()["j"]
    text = history_to_json(history)
    assert history_from_json(text) == history
    path = tmp_path / "j.json"
    path.write_text(text)
    result = Replayer([pipeline_v1]).replay_workflow(path)
    assert result.events == len(history)
    assert result.error is None


async def test_nondeterminism_fails_the_task_once_and_keeps_the_run_open(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(
        env.client, task_queue="q", workflows=[pipeline_v1], activities=[step_a, step_b]
    ):
        handle = await env.client.start_workflow(pipeline_v1, id="nd", task_queue="q")
        await handle.result()
    history = list(env.histories()["nd"])
    # Cut the history after step_b was scheduled and restore it with changed code.
    cut = next(
        i
        for i, e in enumerate(history)
        if isinstance(e.attributes, ActivityScheduled) and e.attributes.activity_type == "step_b"
    )
    partial = history[: cut + 1]
    instance = WorkflowInstance.restore("nd", partial, WorkflowRegistry([pipeline_swapped]))
    assert instance.task_failures and instance.task_failures[0].event_id == partial[-1].event_id
    run_id = partial[-1].run_id
    stale = TimerFiredReport("nd", run_id, "sleep:99", 0)
    first = instance.handle(stale, partial[-1].timestamp_ms + 1)
    assert [type(e.attributes) for e in first.events] == [WorkflowTaskFailed]
    assert first.replies == []
    # The status record says the task is failing, and why; so does describe.
    assert first.status is not None and first.status.status is WorkflowStatus.RUNNING
    assert first.status.task_failure is not None
    assert first.status.task_failure.type == "NonDeterminismError"
    recorded = first.events[0].attributes
    assert isinstance(recorded, WorkflowTaskFailed)
    assert first.status.task_failure.message == recorded.failure.message
    assert instance.status() == first.status
    second = instance.handle(stale, partial[-1].timestamp_ms + 2)
    assert second.events == []
    # The activity's completion is still recorded, so nothing is lost until fixed code arrives.
    done = instance.handle(
        ActivityCompletedReport("nd", run_id, 2, 1, None), partial[-1].timestamp_ms + 3
    )
    assert len(done.events) == 1
    fixed = WorkflowInstance.restore(
        "nd", partial + first.events + done.events, WorkflowRegistry([pipeline_v1])
    )
    assert fixed.task_failures == []
    assert (fixed_status := fixed.status()) is not None and fixed_status.task_failure is None
    # Its first message tells the status topic the task no longer fails; later ones do not.
    recovered = fixed.handle(stale, partial[-1].timestamp_ms + 4)
    assert recovered.status is not None and recovered.status.task_failure is None
    assert fixed.handle(stale, partial[-1].timestamp_ms + 5).status is None


async def test_a_restore_past_the_fixed_code_s_next_command_reports_no_recovery(
    env: WorkflowEnvironment,
) -> None:
    """The status topic heard of the recovery when the fixed code went on (`catch_up`)."""
    assert await _record(env, pipeline_v1, "rec") == "ab"
    history = list(env.histories()["rec"])
    cut = next(i for i, e in enumerate(history) if isinstance(e.attributes, ActivityScheduled))
    partial, run_id = history[: cut + 1], history[cut].run_id
    broken = WorkflowInstance.restore("rec", partial, WorkflowRegistry([pipeline_reordered]))
    now = partial[-1].timestamp_ms
    failed = broken.handle(ActivityCompletedReport("rec", run_id, 1, 1, None), now + 1)
    assert isinstance(failed.events[0].attributes, WorkflowTaskFailed)
    assert failed.status is not None and failed.status.task_failure is not None
    so_far = [*partial, *failed.events]
    fixed = WorkflowInstance.restore("rec", so_far, WorkflowRegistry([pipeline_v1]))
    stale = TimerFiredReport("rec", run_id, "sleep:99", 0)
    recovered = fixed.handle(stale, now + 2)
    assert recovered.status is not None and recovered.status.task_failure is None
    assert [type(e.attributes) for e in recovered.events] == [ActivityScheduled]  # step_b
    again = WorkflowInstance.restore(
        "rec", [*so_far, *recovered.events], WorkflowRegistry([pipeline_v1])
    )
    assert again.handle(stale, now + 3).status is None


async def test_a_run_stuck_again_for_another_reason_says_the_new_one(
    env: WorkflowEnvironment,
) -> None:
    """A second bad deploy records no second `WorkflowTaskFailed` (the run is stuck
    already), but the status record must not keep the first deploy's reason."""
    assert await _record(env, pipeline_v1, "twice") == "ab"
    history = list(env.histories()["twice"])
    cut = next(i for i, e in enumerate(history) if isinstance(e.attributes, ActivityScheduled))
    partial, run_id = history[: cut + 2], history[cut].run_id  # up to step_a's completion
    first_bad = WorkflowInstance.restore("twice", partial, WorkflowRegistry([pipeline_reordered]))
    stale = TimerFiredReport("twice", run_id, "sleep:99", 0)
    failed = first_bad.handle(stale, partial[-1].timestamp_ms + 1)
    assert failed.status is not None and failed.status.task_failure is not None
    so_far = [*partial, *failed.events]
    second_bad = WorkflowInstance.restore("twice", so_far, WorkflowRegistry([pipeline_c_first]))
    again = second_bad.handle(stale, partial[-1].timestamp_ms + 2)
    assert again.events == []  # recorded once
    assert again.status is not None and again.status.task_failure is not None
    assert again.status.task_failure.message != failed.status.task_failure.message
    assert second_bad.handle(stale, partial[-1].timestamp_ms + 3).status is None


def test_restore_of_empty_history_has_no_run() -> None:
    instance = WorkflowInstance.restore("none", [], WorkflowRegistry([pipeline_v1]))
    assert instance.current_run_id is None
    assert instance.is_idle()
