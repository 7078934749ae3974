"""`Client.list_workflows` in the in-memory environment: the same API as over Kafka."""

from __future__ import annotations

import pytest

from runtime import WorkflowFailureError
from runtime.messages import WorkflowStatus
from runtime.testing import WorkflowEnvironment
from tests.engine.test_examples import (
    deposit,
    process_order,
    refund,
    reserve_inventory,
    send_confirmation,
    ship_order,
    transfer,
    verify_payment,
    withdraw,
)
from workers.worker import Worker

ACTIVITIES = [verify_payment, reserve_inventory, ship_order, send_confirmation, withdraw,
              deposit, refund]  # fmt: skip


async def test_workflows_are_listed_by_status_type_and_queue(env: WorkflowEnvironment) -> None:
    client = env.client
    async with Worker(client, task_queue="orders", workflows=[process_order, transfer],
                      activities=ACTIVITIES):  # fmt: skip
        await client.execute_workflow(process_order, "o-1", id="order-1", task_queue="orders")
        failing = await client.start_workflow(transfer, "a", "b", 1, id="t-1", task_queue="orders")
        with pytest.raises(WorkflowFailureError):  # the saga fails by design
            await failing.result()

        listed = {r.workflow_id: r.status async for r in client.list_workflows()}
        assert listed == {"order-1": WorkflowStatus.COMPLETED, "t-1": WorkflowStatus.FAILED}
        failed = [r.workflow_id async for r in client.list_workflows(status=WorkflowStatus.FAILED)]
        assert failed == ["t-1"]
        typed = [r.workflow_id async for r in client.list_workflows(workflow_type="process_order")]
        assert typed == ["order-1"]
        assert [r async for r in client.list_workflows(task_queue="payments")] == []


async def test_a_status_given_as_its_text_narrows_like_the_member(
    env: WorkflowEnvironment,
) -> None:
    """``status="completed"`` (the text `WorkflowStatus` is a StrEnum of) was iterated as
    the characters of an iterable and raised ``'c' is not a valid WorkflowStatus``."""
    client = env.client
    async with Worker(client, task_queue="orders", workflows=[process_order],
                      activities=ACTIVITIES):  # fmt: skip
        await client.execute_workflow(process_order, "o-2", id="order-2", task_queue="orders")
        done = [r.workflow_id async for r in client.list_workflows(status="completed")]  # type: ignore[arg-type]
        assert done == ["order-2"]
