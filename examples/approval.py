"""A human in the loop: the workflow waits (durably, for days if need be) for a signal."""

from __future__ import annotations

from datetime import timedelta

from runtime import workflow


@workflow.defn
class Approval:
    def __init__(self) -> None:
        self._approver: str | None = None

    @workflow.run
    async def run(self, request_id: str) -> str:
        try:
            await workflow.wait_condition(
                lambda: self._approver is not None, timeout=timedelta(days=7)
            )
        except TimeoutError:
            return f"{request_id} expired"
        return f"{request_id} approved by {self._approver}"

    @workflow.signal
    def approve(self, by: str) -> None:
        self._approver = by

    @workflow.query
    def status(self) -> str:
        return "approved" if self._approver else "waiting"


WORKFLOWS = [Approval]
ACTIVITIES: list[object] = []
