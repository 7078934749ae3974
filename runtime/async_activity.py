"""Completing an activity attempt from outside its worker, by its task token.

The other half of `activity.raise_complete_async`: the system that finished the work
sends the attempt's report to the workflow's inbox, as the worker would have. Each call
returns once Kafka has the report. Whether the workflow takes it is the owner's to decide,
as for a worker's report: one for an attempt no longer current (it timed out and was
retried, the workflow was cancelled or closed) is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.errors import failure_from_exception
from runtime.messages import ActivityCompletedReport, ActivityFailedReport, ActivityHeartbeat
from runtime.task_token import TaskToken

if TYPE_CHECKING:
    from runtime.client import Client


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
        details a retry resumes from."""
        token = self.task_token
        payloads = self._client.data_converter.encode(details)
        await self._client.transport.send(
            ActivityHeartbeat(token.workflow_id, token.run_id, token.seq, token.attempt, payloads)
        )
