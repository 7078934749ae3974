"""Signal-with-start: a signal to the open run of an id, or a new run that gets it first."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from runtime import workflow
from runtime.errors import UnknownSignalError, WorkflowAlreadyStartedError
from runtime.events import HistoryEvent, SignalReceived, WorkflowStarted, WorkflowTerminated
from runtime.messages import IdReusePolicy, WorkflowStatus
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker


@workflow.defn
class Cart:
    """Collects items until checkout; whoever adds the first item starts it."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.checked_out = False

    @workflow.run
    async def run(self, owner: str) -> list[str]:
        await workflow.wait_condition(lambda: self.checked_out, timeout=timedelta(days=7))
        return [owner, *self.items]

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal
    def checkout(self) -> None:
        self.checked_out = True


@workflow.defn
class Greeter:
    """Reads its signal's effect before its first await: the handler must run first."""

    def __init__(self) -> None:
        self.name: str | None = None

    @workflow.run
    async def run(self) -> str:
        return f"hello {self.name}"

    @workflow.signal
    def call_me(self, name: str) -> None:
        self.name = name


def _kinds(events: list[HistoryEvent]) -> list[str]:
    return [type(event.attributes).__name__ for event in events]


async def test_without_a_run_it_starts_one_whose_first_event_is_the_signal(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        handle = await env.client.start_workflow(
            Cart.run,
            "ann",
            id="cart-1",
            task_queue="q",
            start_signal=Cart.add,
            start_signal_args=["apple"],
        )
        await handle.signal(Cart.checkout)
        assert await handle.result() == ["ann", "apple"]
    events = env.histories()["cart-1"]
    assert _kinds(events)[:2] == ["WorkflowStarted", "SignalReceived"]
    assert isinstance(events[1].attributes, SignalReceived)
    assert events[1].attributes.signal_name == "add"


async def test_the_signal_handler_runs_before_the_run_method(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Greeter]):
        result = await env.client.execute_workflow(
            Greeter.run,
            id="greeter",
            task_queue="q",
            start_signal=Greeter.call_me,
            start_signal_args=["ann"],
        )
    assert result == "hello ann"
    assert _kinds(env.histories()["greeter"]) == [
        "WorkflowStarted",
        "SignalReceived",
        "WorkflowCompleted",
    ]


async def test_an_open_run_takes_the_signal_and_no_run_starts(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        first = await env.client.start_workflow(
            Cart.run,
            "ann",
            id="cart-2",
            task_queue="q",
            start_signal="add",
            start_signal_args=["apple"],
        )
        second = await env.client.start_workflow(
            Cart.run,
            "bob",
            id="cart-2",
            task_queue="q",
            start_signal="add",
            start_signal_args=["pear"],
        )
        assert second.first_execution_run_id == first.first_execution_run_id
        await first.signal(Cart.checkout)
        assert await second.result() == ["ann", "apple", "pear"]
    starts = [e for e in env.histories()["cart-2"] if isinstance(e.attributes, WorkflowStarted)]
    assert len(starts) == 1


async def test_concurrent_senders_start_one_run_and_every_signal_arrives(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        handles = await asyncio.gather(
            *(
                env.client.start_workflow(
                    Cart.run,
                    "ann",
                    id="cart-3",
                    task_queue="q",
                    start_signal=Cart.add,
                    start_signal_args=[f"item-{n}"],
                )
                for n in range(5)
            )
        )
        assert len({h.first_execution_run_id for h in handles}) == 1
        await handles[0].signal(Cart.checkout)
        result = await handles[0].result()
    assert result[0] == "ann" and sorted(result[1:]) == [f"item-{n}" for n in range(5)]


async def test_a_closed_run_is_followed_by_a_new_one_as_the_reuse_policy_allows(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        done = await env.client.start_workflow(
            Cart.run, "ann", id="cart-4", task_queue="q", start_signal=Cart.checkout
        )
        assert await done.result() == ["ann"]
        again = await env.client.start_workflow(
            Cart.run,
            "bob",
            id="cart-4",
            task_queue="q",
            start_signal=Cart.add,
            start_signal_args=["fig"],
        )
        assert again.first_execution_run_id != done.first_execution_run_id
        await again.signal(Cart.checkout)
        assert await again.result() == ["bob", "fig"]
        with pytest.raises(WorkflowAlreadyStartedError):
            await env.client.start_workflow(
                Cart.run,
                "cy",
                id="cart-4",
                task_queue="q",
                start_signal=Cart.checkout,
                id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
            )


async def test_terminate_if_running_replaces_the_open_run_and_signals_the_new_one(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        old = await env.client.start_workflow(Cart.run, "ann", id="cart-5", task_queue="q")
        new = await env.client.start_workflow(
            Cart.run,
            "bob",
            id="cart-5",
            task_queue="q",
            start_signal=Cart.add,
            start_signal_args=["kiwi"],
            id_reuse_policy=IdReusePolicy.TERMINATE_IF_RUNNING,
        )
        assert new.first_execution_run_id != old.first_execution_run_id
        await new.signal(Cart.checkout)
        assert await new.result() == ["bob", "kiwi"]
    events = env.histories()["cart-5"]
    assert any(isinstance(e.attributes, WorkflowTerminated) for e in events)
    assert (await old.describe()).status is WorkflowStatus.COMPLETED  # the id's latest run


async def test_a_retry_with_the_same_request_id_delivers_the_signal_once(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        kwargs: dict[str, Any] = {"id": "cart-6", "task_queue": "q", "start_signal": Cart.add}
        started = await env.client.start_workflow(
            Cart.run, "ann", start_signal_args=["one"], request_id="add-1", **kwargs
        )
        await env.client.start_workflow(
            Cart.run, "ann", start_signal_args=["one"], request_id="add-1", **kwargs
        )  # a retry of the start
        await env.client.start_workflow(
            Cart.run, "ann", start_signal_args=["two"], request_id="add-2", **kwargs
        )
        retried = await env.client.start_workflow(
            Cart.run, "ann", start_signal_args=["two"], request_id="add-2", **kwargs
        )  # a retry of the signal to the open run
        assert retried.first_execution_run_id == started.first_execution_run_id
        await started.signal(Cart.checkout)
        assert await started.result() == ["ann", "one", "two"]


async def test_a_signal_without_handler_starts_nothing(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        with pytest.raises(UnknownSignalError, match="remove"):
            await env.client.start_workflow(
                Cart.run, "ann", id="cart-7", task_queue="q", start_signal="remove"
            )
    assert "cart-7" not in env.histories()


async def test_execute_workflow_takes_a_start_signal(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Cart]):
        result = await env.client.execute_workflow(
            Cart.run, "ann", id="cart-8", task_queue="q", start_signal=Cart.checkout
        )
    assert result == ["ann"]


async def test_signal_arguments_without_a_signal_are_a_type_error(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(TypeError, match="start_signal_args without a start_signal"):
        await env.client.start_workflow(
            Cart.run, "ann", id="cart-9", task_queue="q", start_signal_args=["x"]
        )


@workflow.defn
class FirstLook:
    """Notes its state before its first await, then waits for a name."""

    def __init__(self) -> None:
        self.name: str | None = None

    @workflow.run
    async def run(self) -> str:
        first = self.name
        await workflow.wait_condition(lambda: self.name is not None)
        if first is None:  # a command only a run that saw no name at its start issues
            await workflow.sleep(1)
        return f"{first}/{self.name}"

    @workflow.signal
    def call_me(self, name: str) -> None:
        self.name = name


async def test_a_plain_signal_reusing_the_starts_request_id_is_no_start_signal(
    env: WorkflowEnvironment,
) -> None:
    """Replay tells a start signal by its marked request id: a client that reused its
    start's request id for a later signal must not have that signal replayed before the
    run method (restored, the run would then see the name at its start)."""
    async with Worker(env.client, task_queue="q", workflows=[FirstLook]):
        handle = await env.client.start_workflow(
            FirstLook.run, id="look", task_queue="q", request_id="same"
        )
        await handle.signal(FirstLook.call_me, "ann", request_id="same")
        assert await handle.result() == "None/ann"


async def test_the_handler_is_looked_for_in_the_code_of_the_run_that_gets_the_signal(
    env: WorkflowEnvironment,
) -> None:
    """An open run of another type than the start names takes the signal: its code must
    have the handler, not the named type's (which would start a run)."""
    async with Worker(env.client, task_queue="q", workflows=[Cart, Greeter]):
        cart = await env.client.start_workflow(Cart.run, "ann", id="mixed", task_queue="q")
        with pytest.raises(UnknownSignalError, match="Cart has no signal 'call_me'"):
            await env.client.start_workflow(
                Greeter.run,
                id="mixed",
                task_queue="q",
                start_signal=Greeter.call_me,
                start_signal_args=["bob"],
            )
        signalled = await env.client.start_workflow(
            Greeter.run,
            id="mixed",
            task_queue="q",
            start_signal=Cart.add,
            start_signal_args=["plum"],
        )
        assert signalled.first_execution_run_id == cart.first_execution_run_id
        await cart.signal(Cart.checkout)
        assert await cart.result() == ["ann", "plum"]
