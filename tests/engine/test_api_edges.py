"""Public-API edge cases a review found: conversion, definitions, results, handles.

Each test states what a Temporal user expects; each failed before its fix.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, NamedTuple

import pytest

from runtime import Replayer, WorkflowTypeNotRegisteredError, workflow
from runtime.converter import DataConverter
from runtime.definitions import workflow_name
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import UpdateCompleted, WorkflowCompleted, WorkflowFailed
from runtime.messages import (
    ActivityCompletedReport,
    QueryAnswer,
    QueryWorkflow,
    StartWorkflow,
    UpdateWorkflow,
)
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

C = DataConverter()
T = timedelta(seconds=5)


def _start(wf_type: str, *args: Any) -> StartWorkflow:
    return StartWorkflow("w", wf_type, "q", C.encode(args), "start-1", reply_to="c")


def _round_trip(value: Any, hint: Any) -> Any:
    return C.decode_one(C.encode_one(value), hint)


# --- 1. a result the converter refuses: the run never closes, the update never answers ------


@workflow.defn
async def returns_unconvertible() -> Any:
    return object()


def test_an_unconvertible_workflow_result_fails_the_run() -> None:
    inst = WorkflowInstance.restore("w", [], WorkflowRegistry([returns_unconvertible]))
    t = inst.handle(_start("returns_unconvertible"), 1000)
    closing = [
        e.attributes
        for e in t.events
        if isinstance(e.attributes, (WorkflowCompleted, WorkflowFailed))
    ]
    assert closing, [type(e.attributes).__name__ for e in t.events]  # only WorkflowStarted


@workflow.defn
class UnconvertibleUpdate:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    def get(self) -> Any:
        return object()


def test_an_unconvertible_update_result_completes_the_update() -> None:
    inst = WorkflowInstance.restore("w", [], WorkflowRegistry([UnconvertibleUpdate]))
    inst.handle(_start("UnconvertibleUpdate"), 1000)
    t = inst.handle(UpdateWorkflow("w", None, "u1", "get", (), "r1", "c"), 1001)
    assert any(isinstance(e.attributes, UpdateCompleted) for e in t.events) or t.replies


# --- 2. an activity result that does not decode escapes WorkflowInstance.handle --------------


@workflow.defn
async def wants_int() -> int:
    return int(await workflow.execute_activity("lookup", start_to_close_timeout=T, result_type=int))


def test_an_undecodable_activity_result_does_not_escape_the_engine() -> None:
    inst = WorkflowInstance.restore("w", [], WorkflowRegistry([wants_int]))
    run_id = inst.handle(_start("wants_int"), 1000).events[0].run_id
    report = ActivityCompletedReport("w", run_id, 1, 1, C.encode_one("n/a"))
    inst.handle(report, 1001)  # raises ValueError: invalid literal for int()


# --- 3. the converter --------------------------------------------------------------------


def test_union_members_are_not_coerced() -> None:
    assert _round_trip(5, str | int) == 5  # got '5'
    assert _round_trip("5", int | str) == "5"  # got 5
    assert _round_trip(2.5, int | float) == 2.5  # got 2


class Color(enum.Enum):
    RED = "red"


def test_enum_keyed_dicts_round_trip() -> None:
    assert _round_trip({Color.RED: 1}, dict[Color, int]) == {Color.RED: 1}  # ValueError


@dataclasses.dataclass
class Total:
    amount: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.doubled = self.amount * 2


def test_dataclass_with_init_false_field_round_trips() -> None:
    assert _round_trip(Total(2), Total) == Total(2)  # TypeError: unexpected keyword 'doubled'


class Point(NamedTuple):
    x: int
    y: int


class Plain:
    def __init__(self, x: int) -> None:
        self.x = x


def test_hints_the_converter_cannot_honour_are_not_silently_ignored() -> None:
    assert isinstance(_round_trip(Point(1, 2), Point), Point)  # got [1, 2]
    with pytest.raises((TypeError, ValueError)):
        _round_trip({"x": 1}, Plain)  # returns the dict {'x': 1}


# --- 4. definitions ------------------------------------------------------------------------


def test_two_run_methods_are_refused() -> None:
    with pytest.raises(TypeError):

        @workflow.defn
        class TwoRuns:
            @workflow.run
            async def a(self) -> str:
                return "a"

            @workflow.run
            async def b(self) -> str:  # silently chosen (last in dir() order)
                return "b"


def test_a_sync_run_method_is_refused_at_definition() -> None:
    with pytest.raises(TypeError):

        @workflow.defn
        class SyncRun:
            @workflow.run
            def run(self) -> str:  # fails only at run time: "can't be used in 'await'"
                return "a"


def test_two_signal_handlers_with_one_name_are_refused() -> None:
    with pytest.raises(TypeError):

        @workflow.defn
        class DupSignal:
            @workflow.run
            async def run(self) -> None:
                pass

            @workflow.signal(name="s")
            def s1(self) -> None:
                pass

            @workflow.signal(name="s")
            def s2(self) -> None:
                pass


@workflow.defn
class BaseWf:
    @workflow.run
    async def run(self) -> str:
        return "base"


@workflow.defn(name="SubWf")
class SubWf(BaseWf):
    pass


def test_a_subclass_does_not_rename_its_base() -> None:
    assert workflow_name(BaseWf) == "BaseWf"
    assert workflow_name(BaseWf.run) == "BaseWf"  # got 'SubWf': Base.run now starts SubWf


# --- 5. a start handle is pinned to the first run ------------------------------------------


@workflow.defn
class Accumulate:
    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.run
    async def run(self, carried: list[str], rounds: int) -> list[str]:
        self.items = carried + self.items
        if rounds == 0:
            await workflow.wait_condition(lambda: "end" in self.items)
            return self.items
        await workflow.sleep(10)
        workflow.continue_as_new(self.items, rounds - 1)

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)


async def test_a_start_handle_signals_the_run_after_continue_as_new(
    env: WorkflowEnvironment,
) -> None:
    async with Worker(env.client, task_queue="q", workflows=[Accumulate]):
        handle = await env.client.start_workflow(Accumulate, [], 1, id="a", task_queue="q")
        await handle.signal(Accumulate.add, "x")
        await env.sleep(10)  # the run continues as new
        await handle.signal(Accumulate.add, "end")  # WorkflowNotFoundError: run ... is closed
        assert await handle.result() == ["x", "end"]


def test_a_primitive_of_the_wrong_type_is_refused_not_converted() -> None:
    for value, hint in ((3.99, int), ({"street": "x"}, str), ("5", int), (True, str)):
        with pytest.raises(TypeError, match="expected"):
            _round_trip(value, hint)
    assert _round_trip(3, float) == 3.0 and isinstance(_round_trip(3, float), float)


def test_replaying_a_capture_of_several_workflows_is_refused() -> None:
    events = []
    for workflow_id in ("a", "b"):
        inst = WorkflowInstance.restore(workflow_id, [], WorkflowRegistry([BaseWf]))
        inst.handle(replace(_start("BaseWf"), workflow_id=workflow_id), 1000)
        events += list(inst.history)
    with pytest.raises(ValueError, match="2 workflow ids"):
        Replayer([BaseWf]).replay_workflow(events)


def test_a_run_of_an_unregistered_type_fails_its_task_and_says_so_to_queries() -> None:
    recorded = WorkflowInstance.restore("w", [], WorkflowRegistry([UnconvertibleUpdate]))
    recorded.handle(_start("UnconvertibleUpdate"), 1000)
    elsewhere = WorkflowInstance.restore("w", recorded.history, WorkflowRegistry([BaseWf]))
    [error] = elsewhere.task_failures
    assert isinstance(error, WorkflowTypeNotRegisteredError)
    assert "'UnconvertibleUpdate' is not registered with this worker" in str(error)

    answer = elsewhere.handle(QueryWorkflow("w", None, "anything", (), "q1", "c"), 1001)
    [reply] = answer.replies
    assert isinstance(reply.body, QueryAnswer) and reply.body.failure is not None
    assert "workflow task failed" in reply.body.failure.message

    # Replaying the capture with the wrong list: the advice is for the Replayer's caller.
    with pytest.raises(WorkflowTypeNotRegisteredError) as replayed:
        Replayer([BaseWf]).replay_workflow(list(recorded.history))
    assert str(replayed.value) == (
        "workflow type 'UnconvertibleUpdate' is not among the Replayer's workflows "
        "(event 1; it has: BaseWf)"
    )


def test_top_level_bytes_come_back_as_bytes_without_a_hint() -> None:
    payload = C.encode_one(b"\x00\xffraw")
    assert payload.encoding == "binary/plain"
    assert C.decode_one(payload) == b"\x00\xffraw"
    assert _round_trip(b"\x00\xffraw", bytes) == b"\x00\xffraw"


def test_abstract_collection_hints_take_the_json_value_as_it_is() -> None:
    assert _round_trip([1, 2], Sequence) == [1, 2]
    assert _round_trip({"a": 1}, Mapping) == {"a": 1}
