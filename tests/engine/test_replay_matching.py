"""Replay matching edge cases: histories that are right, and code that must not be told
otherwise (or let off)."""

from __future__ import annotations

from runtime import Replayer
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import WorkflowFailed
from runtime.messages import StartWorkflow, WorkflowStatus
from tests.engine.test_replay import pipeline_v1


def test_a_start_failed_for_want_of_its_type_replays_once_the_type_is_registered() -> None:
    """The start ran no code: code that has the type since must not be held to it."""
    unknown = WorkflowInstance.restore("u", [], WorkflowRegistry([]))
    history = list(unknown.handle(StartWorkflow("u", "pipeline", "q", (), "s1"), 1_000).events)
    assert isinstance(history[-1].attributes, WorkflowFailed)
    assert Replayer([pipeline_v1]).replay_workflow(history).error is None
    restored = WorkflowInstance.restore("u", history, WorkflowRegistry([pipeline_v1]))
    assert restored.task_failures == []
    status = restored.status()
    assert status is not None and status.status is WorkflowStatus.FAILED
    # A new start of the id (allowed after a failure) runs the code that is there now.
    again = restored.handle(StartWorkflow("u", "pipeline", "q", (), "s2"), 2_000)
    history += again.events
    assert Replayer([pipeline_v1]).replay_workflow(history).error is None
