"""`drift_v1`'s workflow after a change that broke determinism: its first step is another
activity."""

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


WORKFLOWS = [Drifting]
ACTIVITIES = STEPS
