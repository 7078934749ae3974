"""Completing an activity attempt from outside its worker, by its task token.

The other half of `activity.raise_complete_async`: the system that finished the work
sends the attempt's report to the workflow's inbox, as the worker would have. Each call
returns once Kafka has the report. Whether the workflow takes it is the owner's to decide,
as for a worker's report: one for an attempt no longer current (it timed out and was
retried, the workflow was cancelled or closed) is ignored.

A heartbeat also asks the owner whether the attempt is still current, and raises
`ActivityNotCurrentError` when it is not: a system working on the activity for hours
learns that way that the workflow cancelled it, as a worker's activity would. The owner
answers after it took the heartbeat (both travel on the run's inbox partition, in order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.errors import ActivityNotCurrentError, failure_from_exception
from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityHeartbeat,
    PendingActivityState,
    WorkflowStatus,
)
from runtime.task_token import TaskToken

if TYPE_CHECKING:
    from runtime.client import Client, WorkflowExecutionDescription


class AsyncActivityHandle:
    """One attempt that completes asynchronously (`Client.get_async_activity_handle`)."""

    def __init__(self, client: Client, task_token: TaskToken) -> None:
        self._client = client
        self.task_token = task_token

    async def complete(self, result: Any = None) -> None:
        """The attempt succeeded with ``result`` (converted as an activity's return value)."""
        token = self.task_token
        payload = self._client.data_converter.encode_one(result)
        await self._client.transport.send(
            ActivityCompletedReport(
                token.workflow_id, token.run_id, token.seq, token.attempt, payload
            )
        )

    async def fail(self, error: BaseException) -> None:
        """The attempt failed with ``error``: the retry policy decides what follows, as for
        an exception an activity raised (an `ApplicationError` may be non-retryable)."""
        token = self.task_token
        failure = failure_from_exception(error, self._client.data_converter.encode)
        await self._client.transport.send(
            ActivityFailedReport(token.workflow_id, token.run_id, token.seq, token.attempt, failure)
        )

    async def heartbeat(self, *details: Any) -> None:
        """The work goes on: what keeps an attempt with a heartbeat timeout alive, and the
        details a retry resumes from.

        Raises `ActivityNotCurrentError` when the workflow no longer waits on this
        attempt (cancelled, timed out, completed, the run closed): stop the work, its
        outcome would be ignored. The heartbeat was sent either way.
        """
        token = self.task_token
        payloads = self._client.data_converter.encode(details)
        await self._client.transport.send(
            ActivityHeartbeat(token.workflow_id, token.run_id, token.seq, token.attempt, payloads)
        )
        handle = self._client.get_workflow_handle(token.workflow_id, run_id=token.run_id)
        reason = not_current_because(await handle.describe(), token)
        if reason is not None:
            raise ActivityNotCurrentError(
                f"activity {token.seq} attempt {token.attempt} of workflow "
                f"{token.workflow_id!r} (run {token.run_id}) is no longer current: {reason}",
                reason=reason,
            )


def not_current_because(described: WorkflowExecutionDescription, token: TaskToken) -> str | None:
    """Why the run ``described`` no longer waits on the attempt ``token`` names; None
    while it does."""
    if described.status is not WorkflowStatus.RUNNING:
        return f"the run is {described.status.value}"
    pending = described.pending_activity(token.seq)
    if pending is None:
        return "the activity is closed: the workflow cancelled it, or it completed"
    if pending.attempt > token.attempt:
        return f"attempt {pending.attempt} of the activity is the current one"
    if pending.state is PendingActivityState.BACKOFF:
        return "the attempt failed or timed out; the next one waits for its retry"
    return None
