"""Replay edge cases: histories that are right must replay as such, and replay must not
repeat what was said when the events were new."""

from __future__ import annotations

from structlog.testing import capture_logs

from runtime import Replayer, workflow
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import SignalReceived, WorkflowFailed
from runtime.messages import SignalWorkflow, StartWorkflow, WorkflowStatus
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


@workflow.defn(name="deaf")
async def deaf() -> None:
    await workflow.sleep(60)


def test_a_signal_without_handler_is_refused_once_and_leaves_nothing_to_replay() -> None:
    """The warning is for the operator when the signal arrives; nothing is recorded (the
    sender is told), so a restore has nothing to say again."""
    registry = WorkflowRegistry([deaf])
    live = WorkflowInstance.restore("d", [], registry)
    history = list(live.handle(StartWorkflow("d", "deaf", "q", (), "s1"), 1_000).events)
    with capture_logs() as arrived:
        history += live.handle(SignalWorkflow("d", None, "nobody", (), "sig-1"), 2_000).events
    assert [e["event"] for e in arrived] == ["signal without handler refused"]
    assert not any(isinstance(e.attributes, SignalReceived) for e in history)
    with capture_logs() as replayed:
        WorkflowInstance.restore("d", history, registry)
    assert replayed == []
