"""The order workflow: four activities in sequence, each retried by policy.

Used by the demo, the integration tests and the benchmark (W2).
"""

from __future__ import annotations

from datetime import timedelta

from runtime import RetryPolicy, activity, workflow

_STEP = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5),
}


@activity.defn
async def verify_payment(order_id: str) -> str:
    return f"payment-{order_id}"


@activity.defn
async def reserve_inventory(order_id: str) -> str:
    return f"reservation-{order_id}"


@activity.defn
async def ship_order(order_id: str) -> str:
    return f"shipment-{order_id}"


@activity.defn
async def send_confirmation(order_id: str) -> str:
    return f"confirmation-{order_id}"


@workflow.defn
async def process_order(order_id: str) -> list[str]:
    receipts = []
    for step in (verify_payment, reserve_inventory, ship_order, send_confirmation):
        receipts.append(await workflow.execute_activity(step, order_id, **_STEP))  # type: ignore[arg-type]
    return receipts


@activity.defn
async def noop() -> None:
    """W1 of the benchmark: the cheapest possible activity."""


@workflow.defn
async def one_activity() -> None:
    await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))


WORKFLOWS = [process_order, one_activity]
ACTIVITIES = [verify_payment, reserve_inventory, ship_order, send_confirmation, noop]
