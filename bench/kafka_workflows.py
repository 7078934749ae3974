"""Workflows of the Kafka benchmark that the examples do not have.

``chronik worker bench.kafka_workflows examples.order ...`` loads them next to W1
(`examples.order.one_activity`) and W2 (`examples.order.process_order`).
"""

from __future__ import annotations

from datetime import timedelta

from runtime import workflow

TIMER_SECONDS = 2.0


@workflow.defn
async def sleep_two_seconds() -> None:
    """The timer-lateness probe: one durable 2-second timer, nothing else."""
    await workflow.sleep(timedelta(seconds=TIMER_SECONDS))


WORKFLOWS = [sleep_two_seconds]
ACTIVITIES: list[object] = []
