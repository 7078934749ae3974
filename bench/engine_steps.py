"""Engine cost per step: a live workflow must not slow down as its history grows.

Drives `WorkflowInstance.handle` directly (no transport): a workflow awaiting N sequential
activities, each completed by a report. Prints steps/s at 100, 1,000 and 10,000 steps
and the time to restore (fully replay) the 10,000-step history.

    .venv/bin/python bench/engine_steps.py
"""

from __future__ import annotations

import time
from datetime import timedelta

from runtime import workflow
from runtime.converter import DataConverter
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import HistoryEvent
from runtime.messages import ActivityCompletedReport, ActivityTask, StartWorkflow


@workflow.defn
async def sequential(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await workflow.execute_activity(
            "step", i, start_to_close_timeout=timedelta(seconds=30)
        )
    return total


def run(steps: int) -> tuple[float, list[HistoryEvent]]:
    registry = WorkflowRegistry([sequential])
    conv = registry.converter
    instance = WorkflowInstance.restore(f"bench-{steps}", [], registry)
    now = 1_000_000
    start = StartWorkflow(f"bench-{steps}", "sequential", "q", conv.encode([steps]), "r")
    transition = instance.handle(start, now)
    one = conv.encode_one(1)
    began = time.perf_counter()
    for _ in range(steps):
        (task,) = [t for t in transition.tasks if isinstance(t, ActivityTask)]
        now += 1
        report = ActivityCompletedReport(task.workflow_id, task.run_id, task.seq, task.attempt, one)
        transition = instance.handle(report, now)
    elapsed = time.perf_counter() - began
    status = instance.status()
    assert status is not None and status.status == "completed", status
    return steps / elapsed, list(instance.history)


def main() -> None:
    DataConverter()  # import cost out of the measurement
    history: list[HistoryEvent] = []
    for steps in (100, 1_000, 10_000):
        rate, history = run(steps)
        print(f"{steps:>6} sequential activities: {rate:>10,.0f} steps/s  ({len(history)} events)")
    registry = WorkflowRegistry([sequential])
    began = time.perf_counter()
    restored = WorkflowInstance.restore(history[0].workflow_id, history, registry)
    elapsed = time.perf_counter() - began
    assert not restored.task_failures
    print(
        f"full replay of {len(history):,} events: {elapsed:.3f} s "
        f"({len(history) / elapsed:,.0f} events/s)"
    )


if __name__ == "__main__":
    main()
