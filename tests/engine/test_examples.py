"""The seed's two examples: an order pipeline and a transfer saga."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime import (
    ActivityError,
    ApplicationError,
    RetryPolicy,
    WorkflowFailureError,
    activity,
    workflow,
)
from runtime.events import ActivityScheduled
from runtime.messages import WorkflowStatus
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

calls: list[str] = []
T = timedelta(seconds=30)


@activity.defn
async def verify_payment(order_id: str) -> bool:
    calls.append(f"verify:{order_id}")
    return True


@activity.defn
async def reserve_inventory(order_id: str) -> str:
    calls.append(f"reserve:{order_id}")
    return f"res-{order_id}"


@activity.defn
def ship_order(order_id: str, reservation: str) -> str:  # a plain function: thread pool
    calls.append(f"ship:{order_id}:{reservation}")
    return f"track-{order_id}"


@activity.defn
async def send_confirmation(order_id: str, tracking: str) -> None:
    calls.append(f"confirm:{order_id}:{tracking}")


@workflow.defn
async def process_order(order_id: str) -> str:
    await workflow.execute_activity(verify_payment, order_id, start_to_close_timeout=T)
    reservation = await workflow.execute_activity(
        reserve_inventory, order_id, start_to_close_timeout=T
    )
    tracking = await workflow.execute_activity(
        ship_order, order_id, reservation, start_to_close_timeout=T
    )
    await workflow.execute_activity(send_confirmation, order_id, tracking, start_to_close_timeout=T)
    return str(tracking)


async def test_process_order_runs_four_activities_in_order(env: WorkflowEnvironment) -> None:
    calls.clear()
    activities = [verify_payment, reserve_inventory, ship_order, send_confirmation]
    async with Worker(
        env.client, task_queue="orders", workflows=[process_order], activities=activities
    ):
        result = await env.client.execute_workflow(
            process_order, "o-1", id="order-1", task_queue="orders"
        )
    assert result == "track-o-1"
    assert calls == ["verify:o-1", "reserve:o-1", "ship:o-1:res-o-1", "confirm:o-1:track-o-1"]
    history = await env.client.get_workflow_handle("order-1").fetch_history()
    scheduled = [
        e.attributes.activity_type for e in history if isinstance(e.attributes, ActivityScheduled)
    ]
    assert scheduled == ["verify_payment", "reserve_inventory", "ship_order", "send_confirmation"]
    assert [e.event_id for e in history] == list(range(1, len(history) + 1))


ledger: list[tuple[str, str, int]] = []


@activity.defn
async def withdraw(account: str, amount: int) -> None:
    ledger.append(("withdraw", account, amount))


@activity.defn
async def deposit(account: str, amount: int) -> None:
    ledger.append(("deposit", account, amount))
    raise ApplicationError("account closed", type="AccountClosed")


@activity.defn
async def refund(account: str, amount: int) -> None:
    ledger.append(("refund", account, amount))


@workflow.defn
async def transfer(src: str, dst: str, amount: int) -> None:
    await workflow.execute_activity(withdraw, src, amount, start_to_close_timeout=T)
    try:
        await workflow.execute_activity(
            deposit,
            dst,
            amount,
            start_to_close_timeout=T,
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
    except ActivityError:
        await workflow.execute_activity(refund, src, amount, start_to_close_timeout=T)
        raise


async def test_transfer_compensates_then_fails(env: WorkflowEnvironment) -> None:
    ledger.clear()
    async with Worker(
        env.client,
        task_queue="payments",
        workflows=[transfer],
        activities=[withdraw, deposit, refund],
    ):
        handle = await env.client.start_workflow(
            transfer, "a", "b", 10, id="t-1", task_queue="payments"
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "AccountClosed"
    assert ledger.count(("withdraw", "a", 10)) == 1
    assert ledger.count(("refund", "a", 10)) == 1
    assert ledger.count(("deposit", "b", 10)) == 3
    status = await handle.describe()
    assert status.status is WorkflowStatus.FAILED
