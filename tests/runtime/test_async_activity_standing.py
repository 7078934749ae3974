"""Whether a run still waits on the attempt a task token names, from its description:
what `AsyncActivityHandle.heartbeat` tells the system completing an activity."""

from __future__ import annotations

import pytest

from runtime.async_activity import not_current_because
from runtime.client import WorkflowExecutionDescription
from runtime.messages import PendingActivity, PendingActivityState, WorkflowStatus
from runtime.task_token import TaskToken

TOKEN = TaskToken("order-1", "run-1", seq=2, attempt=1)


def _described(
    status: WorkflowStatus = WorkflowStatus.RUNNING, *pending: PendingActivity
) -> WorkflowExecutionDescription:
    return WorkflowExecutionDescription(
        "order-1", "run-1", "order", "q", status, 0, None, 5, pending_activities=pending
    )


def _pending(seq: int, attempt: int, state: PendingActivityState) -> PendingActivity:
    return PendingActivity(seq, "charge", "q", state, attempt, 3, 0, 0)


@pytest.mark.parametrize("state", [PendingActivityState.SCHEDULED, PendingActivityState.STARTED])
def test_the_pending_attempt_is_current(state: PendingActivityState) -> None:
    assert (
        not_current_because(_described(WorkflowStatus.RUNNING, _pending(2, 1, state)), TOKEN)
        is None
    )


@pytest.mark.parametrize(
    ("described", "reason"),
    [
        (_described(WorkflowStatus.CANCELLED), "the run is cancelled"),
        (_described(WorkflowStatus.CONTINUED_AS_NEW), "the run is continued_as_new"),
        (
            _described(WorkflowStatus.RUNNING, _pending(1, 1, PendingActivityState.STARTED)),
            "the activity is closed: the workflow cancelled it, or it completed",
        ),
        (
            _described(WorkflowStatus.RUNNING, _pending(2, 2, PendingActivityState.SCHEDULED)),
            "attempt 2 of the activity is the current one",
        ),
        (
            _described(WorkflowStatus.RUNNING, _pending(2, 1, PendingActivityState.BACKOFF)),
            "the attempt failed or timed out; the next one waits for its retry",
        ),
    ],
    ids=["closed-run", "continued", "activity-closed", "retried", "backoff"],
)
def test_an_attempt_the_run_no_longer_waits_on_says_why(
    described: WorkflowExecutionDescription, reason: str
) -> None:
    assert not_current_because(described, TOKEN) == reason
