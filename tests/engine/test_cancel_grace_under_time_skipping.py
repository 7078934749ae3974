"""A cancelled activity's grace follows the environment's clock while time skips.

A cancelled attempt has `CANCEL_GRACE_S` (5 s) to clean up before it is given up. In the
in-memory environment that grace was real time: a test whose activity ignored the
cancellation either waited it out (its heartbeats woke the environment as progress,
holding virtual time for the whole grace) or went on while the attempt lived, past an
hour of virtual time. The grace is virtual time now, as the timers are; when no clock
skips, it stays 5 real seconds (`run_activity`, tested in test_activity_executor).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from runtime import WorkflowFailureError, activity, workflow
from runtime.engine.activity_executor import CANCEL_GRACE_S
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

#: Far under the grace: met only if the environment does not wait the grace out.
REAL_TIME_BOUND_S = 2.5

seen: list[str] = []


async def _ignore_the_first_cancel(*, heartbeat: bool) -> None:
    """Work on through the first cancellation; a second one (the attempt given up) ends it."""
    while True:
        try:
            if heartbeat:
                activity.heartbeat(len(seen))
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            seen.append("given up" if "cancelled" in seen else "cancelled")
            if seen[-1] == "given up":
                raise


@activity.defn
async def stubborn() -> None:
    await _ignore_the_first_cancel(heartbeat=False)


@activity.defn
async def stubborn_and_beating() -> None:
    await _ignore_the_first_cancel(heartbeat=True)


@workflow.defn
async def cancels_its_activity() -> float:
    started = workflow.now()
    work = workflow.start_activity(stubborn, start_to_close_timeout=timedelta(hours=2))
    await workflow.sleep(timedelta(minutes=1))
    work.cancel()
    await workflow.sleep(timedelta(hours=1))
    return (workflow.now() - started).total_seconds()


@workflow.defn
async def cleans_up_when_cancelled() -> None:
    try:
        await workflow.execute_activity(
            stubborn_and_beating,
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=1),
        )
    except asyncio.CancelledError:
        await workflow.sleep(timedelta(hours=1))
        raise


async def test_an_attempt_that_ignores_its_cancel_is_given_up_once_virtual_time_passes_its_grace(
    env: WorkflowEnvironment,
) -> None:
    seen.clear()
    async with Worker(
        env.client, task_queue="q", workflows=[cancels_its_activity], activities=[stubborn]
    ):
        began = time.monotonic()
        elapsed = await env.client.execute_workflow(
            cancels_its_activity, id="cancels", task_queue="q"
        )
        real = time.monotonic() - began

        assert seen == ["cancelled", "given up"]  # an hour went by: so did the grace
    assert elapsed == 3660
    assert real < REAL_TIME_BOUND_S < CANCEL_GRACE_S


async def test_heartbeats_of_a_cancelled_attempt_do_not_hold_virtual_time(
    env: WorkflowEnvironment,
) -> None:
    seen.clear()
    async with Worker(
        env.client,
        task_queue="q",
        workflows=[cleans_up_when_cancelled],
        activities=[stubborn_and_beating],
    ):
        handle = await env.client.start_workflow(
            cleans_up_when_cancelled, id="cleans-up", task_queue="q"
        )
        await asyncio.sleep(0.1)  # the activity runs and heartbeats
        began = time.monotonic()
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        real = time.monotonic() - began

        assert seen == ["cancelled", "given up"]
    assert real < REAL_TIME_BOUND_S < CANCEL_GRACE_S
