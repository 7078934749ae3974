"""A client retrying a signal, cancel or terminate with its request id: taken once, answered
every time — also after the run closed, when the first answer was the one lost."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime import WorkflowFailureError, WorkflowNotFoundError, workflow
from runtime.messages import WorkflowStatus
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker


@workflow.defn
class Counter:
    def __init__(self) -> None:
        self.count = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.count >= 2, timeout=timedelta(days=1))
        return self.count

    @workflow.signal
    def bump(self) -> None:
        self.count += 1


async def test_a_retried_signal_is_delivered_once(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Counter]):
        handle = await env.client.start_workflow(Counter.run, id="counter-1", task_queue="q")
        await handle.signal(Counter.bump, request_id="bump-1")
        await handle.signal(Counter.bump, request_id="bump-1")  # the retry
        await handle.signal(Counter.bump, request_id="bump-2")
        assert await handle.result() == 2
        await handle.signal(Counter.bump, request_id="bump-2")  # a retry after the close
        with pytest.raises(WorkflowNotFoundError, match="completed"):
            await handle.signal(Counter.bump, request_id="bump-3")  # a new signal: too late


async def test_a_retried_terminate_or_cancel_after_the_close_is_accepted(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Counter]):
        ended = await env.client.start_workflow(Counter.run, id="counter-2", task_queue="q")
        await ended.terminate("enough", request_id="stop-1")
        await ended.terminate("enough", request_id="stop-1")
        assert (await ended.describe()).status is WorkflowStatus.TERMINATED
        with pytest.raises(WorkflowNotFoundError, match="terminated"):
            await ended.terminate("again", request_id="stop-2")

        cancelled = await env.client.start_workflow(Counter.run, id="counter-3", task_queue="q")
        await cancelled.cancel(request_id="cancel-1")
        with pytest.raises(WorkflowFailureError):
            await cancelled.result()
        await cancelled.cancel(request_id="cancel-1")
        with pytest.raises(WorkflowNotFoundError):
            await cancelled.cancel(request_id="cancel-2")
