"""A client retrying a signal, cancel or terminate with its request id: taken once, answered
every time — also after the run closed, when the first answer was the one lost."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime import WorkflowFailureError, WorkflowNotFoundError, workflow
from runtime.messages import IdReusePolicy, TerminateWorkflow, WorkflowStatus
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


@workflow.defn
class Generations:
    """Continues as new on every signal: the signal's run closes in the step that took it."""

    def __init__(self) -> None:
        self.bumped = False

    @workflow.run
    async def run(self, generation: int) -> int:
        await workflow.wait_condition(lambda: self.bumped, timeout=timedelta(days=1))
        if generation < 5:
            workflow.continue_as_new(generation + 1)
        return generation

    @workflow.signal
    def bump(self) -> None:
        self.bumped = True


async def test_a_retried_signal_is_not_delivered_to_the_run_that_followed(
    env: WorkflowEnvironment,
) -> None:
    """The first copy was taken by a run that then continued as new; the retry, aimed at
    the current run (no run id), must be answered as taken, not delivered again to the next
    generation (which would continue as new once more)."""
    async with Worker(env.client, task_queue="q", workflows=[Generations]):
        await env.client.start_workflow(Generations.run, 1, id="gen-1", task_queue="q")
        handle = env.client.get_workflow_handle("gen-1")
        await handle.signal(Generations.bump, request_id="bump-1")
        await handle.signal(Generations.bump, request_id="bump-1")  # the retry
        await handle.signal(Generations.bump, request_id="bump-2")
        # Two distinct signals: generations 1 -> 2 -> 3, still waiting in 3.
        assert (await handle.describe()).status is WorkflowStatus.RUNNING
        await handle.signal(Generations.bump, request_id="bump-3")
        await handle.signal(Generations.bump, request_id="bump-4")
        await handle.signal(Generations.bump, request_id="bump-5")
        assert await handle.result() == 5


async def test_a_retried_terminate_does_not_end_the_next_run_of_the_id(
    env: WorkflowEnvironment,
) -> None:
    """Terminated, then started again under the same id: the terminate's retry is the
    first request again (answered as taken), not an order to end the new run."""
    async with Worker(env.client, task_queue="q", workflows=[Counter]):
        await env.client.start_workflow(Counter.run, id="counter-9", task_queue="q")
        handle = env.client.get_workflow_handle("counter-9")
        await handle.terminate("enough", request_id="stop-9")
        await env.client.start_workflow(
            Counter.run,
            id="counter-9",
            task_queue="q",
            id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE,
        )
        await handle.terminate("enough", request_id="stop-9")  # the retry of the first
        assert (await handle.describe()).status is WorkflowStatus.RUNNING


async def test_a_terminate_without_a_request_id_is_no_retry_of_an_earlier_run_s(
    env: WorkflowEnvironment,
) -> None:
    """Other producers of the inbox may leave the request id empty: an empty id names no
    request, so a terminate of the current run is not taken for a retry of the one that
    ended the id's previous run."""
    async with Worker(env.client, task_queue="q", workflows=[Counter]):
        for _ in range(2):
            await env.client.start_workflow(
                Counter.run, id="counter-10", task_queue="q",
                id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE,
            )  # fmt: skip
            await env.client.transport.send(
                TerminateWorkflow("counter-10", None, "no id", "", None)
            )
            await env.sleep(timedelta(seconds=1))
            description = await env.client.get_workflow_handle("counter-10").describe()
            assert description.status is WorkflowStatus.TERMINATED
