"""Workflows whose activities write every execution to a ledger file.

Crash tests count the lines: one per step, plus only the executions that were in flight
when a worker was killed. The ledger path comes from ``CHRONIK_TEST_LEDGER``; each line is
``<idempotency key> <pid>``, appended with O_APPEND so concurrent writers never interleave.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from runtime import activity, workflow


def _record() -> None:
    line = f"{activity.info().idempotency_key} {os.getpid()}\n".encode()
    fd = os.open(os.environ["CHRONIK_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@activity.defn
async def ledger_step(order_id: str, step: int) -> str:
    await asyncio.sleep(0.02)
    _record()
    return f"{order_id}:{step}"


@workflow.defn
async def ledger_order(order_id: str) -> list[str]:
    return [
        await workflow.execute_activity(
            # Long enough that a takeover (session timeout, restart) on a loaded machine is
            # always a redelivery of attempt 1, never a timeout and an attempt 2.
            ledger_step,
            order_id,
            step,
            start_to_close_timeout=timedelta(minutes=5),
        )
        for step in range(4)
    ]


@workflow.defn
async def sleeper(seconds: float) -> str:
    await workflow.sleep(timedelta(seconds=seconds))
    return f"slept {seconds}"


WORKFLOWS = [ledger_order, sleeper]
ACTIVITIES = [ledger_step]
