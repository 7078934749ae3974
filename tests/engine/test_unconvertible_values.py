"""A value JSON cannot carry is refused where the user hands it over, naming it and its path.

`NaN` and `Infinity` are the ones Python's `json` would otherwise write: other languages'
parsers refuse such a payload, so it must never reach a history.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import pytest

from runtime import (
    ActivityError,
    ApplicationError,
    RetryPolicy,
    WorkflowFailureError,
    activity,
    workflow,
)
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

T = timedelta(seconds=5)
ONCE = RetryPolicy(maximum_attempts=1)


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float


@workflow.defn
async def echo(reading: Reading) -> Reading:
    return reading


async def test_a_start_argument_json_cannot_carry_raises_at_the_call(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(TypeError, match=r"float nan to JSON at \$\.value"):
        await env.client.start_workflow(
            echo, Reading("t1", math.nan), id="nan-start", task_queue="q"
        )
    assert "nan-start" not in env.histories()


@workflow.defn
async def diverges() -> float:
    return math.inf


async def test_a_workflow_result_json_cannot_carry_fails_the_run_saying_so(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[diverges]):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(diverges, id="inf-result", task_queue="q")
    assert "cannot convert float inf to JSON at $" in str(failed.value.cause)


measured: list[int] = []


@activity.defn
async def measure() -> Reading:
    measured.append(1)
    return Reading("t1", -math.inf)


@workflow.defn
async def measures() -> str:
    try:  # the default retry policy: unlimited attempts
        await workflow.execute_activity(measure, start_to_close_timeout=T)
    except ActivityError as error:
        assert isinstance(error.cause, ApplicationError)
        return f"{error.cause.type}: {error.cause}"
    return "no error"


async def test_an_activity_result_json_cannot_carry_fails_the_activity_saying_so(
    env: WorkflowEnvironment,
) -> None:
    """Not retried: a result the converter refuses is refused again, and each retry ran the
    activity's side effects once more — forever, with the default policy."""
    measured.clear()
    async with Worker(env.client, task_queue="q", workflows=[measures], activities=[measure]):
        reason = await env.client.execute_workflow(measures, id="inf-activity", task_queue="q")
    assert reason == (
        "ResultNotConvertible: the activity's result cannot be converted: "
        "cannot convert float -inf to JSON at $.value: JSON has no NaN or Infinity"
    )
    assert measured == [1]


@workflow.defn
async def passes_nan() -> str:
    try:
        await workflow.execute_activity(measure, "ok", math.nan, start_to_close_timeout=T)
    except TypeError as error:
        return f"{error} / {''.join(error.__notes__)}"
    return "no error"


async def test_an_activity_argument_json_cannot_carry_raises_in_the_workflow(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[passes_nan], activities=[measure]):
        reason = await env.client.execute_workflow(passes_nan, id="nan-arg", task_queue="q")
    assert reason.startswith("cannot convert float nan to JSON at $")
    assert reason.endswith("in value 2 of 2")
