"""Child workflows, continue-as-new, id reuse and unknown workflow types."""

from __future__ import annotations

import pytest

from runtime import (
    ApplicationError,
    ChildWorkflowError,
    IdReusePolicy,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    workflow,
)
from runtime.events import WorkflowStarted
from runtime.messages import WorkflowStatus
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker


@workflow.defn
async def child(n: int) -> int:
    if n < 0:
        raise ApplicationError("negative", type="Negative")
    return n * 2


@workflow.defn
async def parent(values: list[int]) -> list[str]:
    out = []
    for i, v in enumerate(values):
        try:
            out.append(
                str(
                    await workflow.execute_child_workflow(
                        child, v, id=f"{workflow.info().workflow_id}-c{i}"
                    )
                )
            )
        except ChildWorkflowError as err:
            assert isinstance(err.cause, ApplicationError)
            out.append(f"failed:{err.cause.type}")
    return out


async def test_children_and_their_failures(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[parent, child]):
        result = await env.client.execute_workflow(parent, [1, -1, 5], id="p", task_queue="q")
        assert result == ["2", "failed:Negative", "10"]
        child_status = await env.client.get_workflow_handle("p-c1").describe()
    assert child_status.status is WorkflowStatus.FAILED


@workflow.defn
async def counter(count: int, total: int) -> int:
    if count < 3:
        workflow.continue_as_new(count + 1, total + count)
    return total + count


async def test_continue_as_new_carries_state_and_starts_fresh_histories(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[counter]):
        handle = await env.client.start_workflow(counter, 0, 0, id="can", task_queue="q")
        assert await handle.result() == 0 + 1 + 2 + 3
        history = await env.client.get_workflow_handle("can").fetch_history()
    runs = [e.run_id for e in history if isinstance(e.attributes, WorkflowStarted)]
    assert len(set(runs)) == 4
    last_run = [e for e in history if e.run_id == runs[-1]]
    assert isinstance(last_run[0].attributes, WorkflowStarted)
    assert last_run[0].attributes.continued_from_run_id == runs[-2]
    first_run_handle = env.client.get_workflow_handle("can", run_id=runs[0])
    assert await first_run_handle.result() == 6  # follows the chain


async def test_id_reuse_and_duplicate_start_requests(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[child]):
        h1 = await env.client.start_workflow(child, 1, id="dup", task_queue="q", request_id="req-1")
        h2 = await env.client.start_workflow(child, 1, id="dup", task_queue="q", request_id="req-1")
        assert h1.first_execution_run_id == h2.first_execution_run_id
        assert await h1.result() == 2
        with pytest.raises(WorkflowAlreadyStartedError):  # it completed: not a failed one
            await env.client.start_workflow(
                child, 2, id="dup", task_queue="q",
                id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )  # fmt: skip
        h3 = await env.client.start_workflow(
            child, 2, id="dup", task_queue="q"
        )  # Temporal's default
        assert h3.first_execution_run_id != h1.first_execution_run_id
        assert await h3.result() == 4


async def test_unknown_workflow_type_fails_naming_type_and_queue(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[child]):
        handle = await env.client.start_workflow("nope", id="unknown", task_queue="elsewhere")
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    message = str(info.value.cause)
    assert "'nope'" in message
    assert "'elsewhere'" in message
    # Types are per namespace, not per queue: the message must not say "on task queue".
    assert "is not registered with the workflow worker that owns 'unknown'" in message
