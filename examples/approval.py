"""A human in the loop: the workflow waits (durably, for days if need be) for a signal."""

from __future__ import annotations

from datetime import timedelta

from runtime import workflow


@workflow.defn
class Approval:
    def __init__(self) -> None:
        self._approver: str | None = None
        self._reviewers: list[str] = []

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

    @workflow.update
    def add_reviewer(self, name: str) -> list[str]:
        """An update: changes the state and answers (the reviewers so far)."""
        self._reviewers.append(name)
        return list(self._reviewers)

    @add_reviewer.validator
    def _check_reviewer(self, name: str) -> None:
        if not name.strip():
            raise ValueError("a reviewer needs a name")


WORKFLOWS = [Approval]
ACTIVITIES: list[object] = []
