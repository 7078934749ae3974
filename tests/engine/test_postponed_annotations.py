"""Type hints under `from __future__ import annotations`, as most typed codebases write them.

Hints are then text until something resolves them; resolving them when the decorator ran
failed for any class defined further down, and the failure left every argument untyped.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from runtime import RetryPolicy, WorkflowFailureError, activity, workflow
from runtime.converter import DataConverter
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

if TYPE_CHECKING:
    from decimal import Decimal as OnlyForTypeCheckers

T = timedelta(seconds=5)


@activity.defn
async def price(order: Order) -> Quote:  # both classes are defined below
    assert isinstance(order, Order), f"got {type(order).__name__}"  # was a dict
    return Quote(order.sku, 2 * order.quantity)


@workflow.defn
async def quote(order: Order) -> Quote:
    assert isinstance(order, Order), f"got {type(order).__name__}"
    result = await workflow.execute_activity(price, order, start_to_close_timeout=T)
    assert isinstance(result, Quote), f"got {type(result).__name__}"
    return result


@dataclasses.dataclass
class Order:
    sku: str
    quantity: int


@dataclasses.dataclass
class Quote:
    sku: str
    cents: int


async def test_hints_naming_classes_defined_further_down_decode(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[quote], activities=[price]):
        result = await env.client.execute_workflow(quote, Order("a", 3), id="fw", task_queue="q")
    assert result == Quote("a", 6)


@activity.defn
async def typed_for_checkers_only(amount: OnlyForTypeCheckers) -> None:
    pass


@workflow.defn
async def calls_it() -> None:
    await workflow.execute_activity(
        typed_for_checkers_only,
        "1.5",
        start_to_close_timeout=T,
        retry_policy=RetryPolicy(maximum_attempts=1),
    )


async def test_a_hint_that_never_resolves_fails_naming_the_function(
    env: WorkflowEnvironment,
) -> None:
    """It used to be dropped silently, with every other hint of the function: the call
    that needs the activity's result hint raises in the workflow."""
    async with Worker(
        env.client, task_queue="q", workflows=[calls_it], activities=[typed_for_checkers_only]
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(calls_it, id="tc", task_queue="q")
    reason = str(failed.value.cause)
    assert "cannot resolve the type hints of typed_for_checkers_only" in reason
    assert "OnlyForTypeCheckers" in reason


@workflow.defn
async def takes_one(order: OnlyForTypeCheckers) -> None:
    pass


async def test_a_workflow_whose_hints_never_resolve_is_refused_by_the_client_and_the_run(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[takes_one]):
        with pytest.raises(TypeError, match="cannot resolve the type hints of takes_one"):
            await env.client.execute_workflow(takes_one, "1.5", id="tw", task_queue="q")
        with pytest.raises(WorkflowFailureError) as failed:  # a result type given: it starts
            await env.client.execute_workflow(
                takes_one, "1.5", id="tw", task_queue="q", result_type=type(None)
            )
    assert "cannot resolve the type hints of takes_one" in str(failed.value.cause)


def _local_classes() -> tuple[Any, Any]:
    @dataclasses.dataclass
    class Inner:
        n: int

    @dataclasses.dataclass
    class Outer:
        inner: Inner  # text naming a class no module global holds

    return Outer, Inner


def test_a_local_dataclass_whose_hints_do_not_resolve_is_a_type_error() -> None:
    outer, inner = _local_classes()
    conv = DataConverter()
    payload = conv.encode_one(outer(inner(1)))
    with pytest.raises(TypeError, match=r"cannot decode .*Outer: its field hints do not resolve"):
        conv.decode_one(payload, outer)  # was a NameError, which unions did not catch
    assert conv.decode_one(payload, outer | dict[str, Any]) == {"inner": {"n": 1}}
