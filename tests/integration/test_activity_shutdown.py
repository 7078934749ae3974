"""A worker that stops while an activity runs leaves that attempt to the next worker.

The stop gives running activities a drain period, then cancels them. Reporting those as
"cancelled" spent the attempt: with ``maximum_attempts=1`` the workflow failed with a
cancellation nobody asked for, although the task's offset was meant to stay open so the
same attempt runs again on whichever worker takes the partition.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from pathlib import Path

import pytest

from runtime import RetryPolicy, activity, workflow
from runtime.client import Client
from workers import kafka_host
from workers.activity_worker import ActivityWorkerConfig
from workers.worker import Worker

pytestmark = pytest.mark.kafka

#: Attempts seen, in order; the first one hangs until cancelled.
attempts: list[int] = []
first_started = asyncio.Event()


@activity.defn
async def long_job() -> str:
    attempts.append(activity.info().attempt)
    if len(attempts) == 1:
        first_started.set()
        await asyncio.sleep(3600)  # until the stop cancels it
    return "done"


@workflow.defn
async def one_attempt() -> str:
    result: str = await workflow.execute_activity(
        long_job,
        start_to_close_timeout=timedelta(seconds=120),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )
    return result


async def test_an_attempt_cut_short_by_a_stop_runs_again_on_the_next_worker(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(
        kafka_host, "ActivityWorkerConfig", functools.partial(ActivityWorkerConfig, drain_s=0.2)
    )
    attempts.clear()
    first_started.clear()

    def hosting() -> Worker:
        return Worker(client, task_queue="stops", workflows=[one_attempt], activities=[long_job])

    async with hosting():
        handle = await client.start_workflow(one_attempt, id="stops-1", task_queue="stops")
        await asyncio.wait_for(first_started.wait(), 60)
    async with hosting():  # takes the partitions over, the task with them
        assert await asyncio.wait_for(handle.result(), 90) == "done"
    assert attempts == [1, 1]  # the same attempt, run again
