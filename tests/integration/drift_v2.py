"""`drift_v1`'s workflows after a change that broke determinism: their first step is
another activity."""

from __future__ import annotations

from runtime import workflow
from tests.engine.steps import STEPS, T, step_b
from tests.integration import drift_v1


@workflow.defn(name="Drifting")
class Drifting(drift_v1.Drifting):
    @workflow.run
    async def run(self) -> str:
        first: str = await workflow.execute_activity(step_b, start_to_close_timeout=T)
        await workflow.wait_condition(lambda: self.going)
        return first


@workflow.defn(name="Generations")
class Generations(drift_v1.Generations):
    @workflow.run
    async def run(self, generation: int) -> str:
        if generation == 0:
            await workflow.execute_activity(step_b, start_to_close_timeout=T)
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: self.going)
        return f"generation {generation}"


WORKFLOWS = [Drifting, Generations]
ACTIVITIES = STEPS
