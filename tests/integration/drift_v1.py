"""Workflows as first deployed: step_a, then wait for `go`. `drift_v2` changes their first
step, which histories recorded by this code cannot follow (Drifting), or can where only
a run that continued as new took it (Generations)."""

from __future__ import annotations

import asyncio

from runtime import workflow
from runtime.client import WorkflowHandle
from runtime.events import ActivityCompleted
from tests.engine.steps import STEPS, T, step_a


@workflow.defn(name="Drifting")
class Drifting:
    def __init__(self) -> None:
        self.going = False

    @workflow.run
    async def run(self) -> str:
        first: str = await workflow.execute_activity(step_a, start_to_close_timeout=T)
        await workflow.wait_condition(lambda: self.going)
        return first

    @workflow.signal
    def go(self) -> None:
        self.going = True


@workflow.defn(name="Generations")
class Generations:
    """Its first run takes step_a and continues as new; the next waits for `go` there.
    `drift_v2` changes only the first run's step: the open run still replays."""

    def __init__(self) -> None:
        self.going = False

    @workflow.run
    async def run(self, generation: int) -> str:
        if generation == 0:
            await workflow.execute_activity(step_a, start_to_close_timeout=T)
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: self.going)
        return f"generation {generation}"

    @workflow.signal
    def go(self) -> None:
        self.going = True


WORKFLOWS = [Drifting, Generations]
ACTIVITIES = STEPS


async def until_first_step_done(handle: WorkflowHandle) -> None:
    """Until the run's history has step_a's completion: it then waits for `go`."""
    for _ in range(300):
        history = await handle.fetch_history()
        if any(isinstance(e.attributes, ActivityCompleted) for e in history):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id}: step_a never completed")
