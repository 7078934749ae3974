"""A workflow stuck retrying an activity, for what `describe` tells an operator of it."""

from __future__ import annotations

from datetime import timedelta

from runtime import ApplicationError, RetryPolicy, activity, workflow


@activity.defn
async def charge_card(card: str) -> None:
    raise ApplicationError(f"card {card} declined", type="CardDeclined")


@workflow.defn
async def charge(card: str) -> None:
    await workflow.execute_activity(
        charge_card,
        card,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(initial_interval=timedelta(hours=1), maximum_attempts=3),
    )


WORKFLOWS = [charge]
ACTIVITIES = [charge_card]
