"""A finished workflow is freed by reference counting, not left to the cycle collector.

A worker runs thousands of workflows a second. Had a finished one been a reference cycle
(engine parts pointing back at their owner), every one would wait for a garbage
collection, and those walks paused the worker for up to a second (docs/engine.md,
"Memory"). These tests run workflows to the end with the collector off and check that it
then finds nothing.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from runtime import workflow
from runtime.converter import DataConverter
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.engine.ids import is_activity_timer
from runtime.messages import ActivityCompletedReport, StartWorkflow, TimerFiredReport
from tests.engine.test_replay import pipeline_patched

STEP = timedelta(seconds=5)
_PROJECT = str(Path(__file__).resolve().parents[2])


def _workflow_garbage() -> list[str]:
    """What a collection finds of the engine's or the workflows' objects, by type.

    Only those: the collector sees the whole process, where threads earlier tests left
    (an executor's, a client's) may drop cycles of their own meanwhile — counting every
    object made the test fail now and then in the full suite.
    """
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return sorted({_name(item) for item in found if _ours(item)})


def _ours(item: object) -> bool:
    code = getattr(item, "cr_code", None) or getattr(item, "f_code", None)
    if isinstance(item, types.FunctionType):
        code = item.__code__
    if isinstance(code, types.CodeType):
        return code.co_filename.startswith(_PROJECT)
    return type(item).__module__.startswith(("runtime.", "tests.", "examples."))


def _name(item: object) -> str:
    return f"{type(item).__module__}.{type(item).__qualname__}"


@workflow.defn
class Reminder:
    """A class-based workflow with a timer: the instance, its loop and a durable timer."""

    def __init__(self) -> None:
        self.sent = 0

    @workflow.run
    async def run(self, times: int) -> int:
        for _ in range(times):
            await workflow.sleep(STEP)
            self.sent += 1
        return self.sent


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The collector off, after one workflow ran: first uses import lazily (pydantic's
    `BaseModel` in the converter), and a module import leaves cycles of its own."""
    _finish(WorkflowInstance("warm-up", WorkflowRegistry([Reminder])), "Reminder", (1,))
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _finish(instance: WorkflowInstance, workflow_type: str, args: tuple[object, ...]) -> None:
    """Start the workflow; complete every activity and fire every sleep until it closes."""
    converter = DataConverter()
    start = StartWorkflow(
        instance.workflow_id, workflow_type, "q", converter.encode(list(args)), "r-1"
    )
    transition = instance.handle(start, 1_000)
    now = 1_000
    while not instance.is_closed():
        now += 10_000
        run_id = instance.current_run_id or ""
        for task in transition.tasks:
            done = ActivityCompletedReport(
                task.workflow_id, task.run_id, task.seq, task.attempt, converter.encode(["x"])[0]
            )
            transition = instance.handle(done, now)
        sleeps = [t for t in transition.timers if not is_activity_timer(t.timer_id)]
        for timer in sleeps:
            fired = TimerFiredReport(instance.workflow_id, run_id, timer.timer_id, timer.fire_at_ms)
            transition = instance.handle(fired, now)


@pytest.mark.usefixtures("collector_off")
def test_finished_workflows_leave_no_garbage_cycles() -> None:
    registry = WorkflowRegistry([pipeline_patched, Reminder])
    for n in range(10):
        _finish(WorkflowInstance(f"p-{n}", registry), "pipeline", ())
        _finish(WorkflowInstance(f"r-{n}", registry), "Reminder", (2,))
    assert _workflow_garbage() == []


@pytest.mark.usefixtures("collector_off")
def test_a_restored_workflow_leaves_no_garbage_cycles() -> None:
    registry = WorkflowRegistry([pipeline_patched])
    live = WorkflowInstance("p", registry)
    _finish(live, "pipeline", ())
    history = list(live.history)
    del live
    for _ in range(10):
        restored = WorkflowInstance.restore("p", history, registry)
        assert restored.is_closed()
    del restored
    assert _workflow_garbage() == []
