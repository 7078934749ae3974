"""What a run waits on, as `describe()` reports it: its open activities, timers, children.

Read off the engine's state of the run (`runtime.engine.state`), which the history alone
rebuilds: an owner that restored the run from its store answers as the one that ran it.
A closed run waits on nothing, whatever its state still holds.
"""

from __future__ import annotations

from runtime.engine.state import ActivityState, Phase, RunState
from runtime.messages import (
    PendingActivity,
    PendingActivityState,
    PendingChild,
    PendingTimer,
    StatusRecord,
    WorkflowDescription,
)

_STATES = {
    Phase.SCHEDULED: PendingActivityState.SCHEDULED,
    Phase.STARTED: PendingActivityState.STARTED,
    Phase.BACKOFF: PendingActivityState.BACKOFF,
}


def describe_run(status: StatusRecord, run: RunState) -> WorkflowDescription:
    if run.closed:
        return WorkflowDescription(status)
    return WorkflowDescription(
        status,
        pending_activities=tuple(
            _activity(state)
            for _, state in sorted(run.activities.items())
            if state.phase is not Phase.CLOSED
        ),
        pending_timers=tuple(
            PendingTimer(seq, fire_at_ms) for seq, fire_at_ms in sorted(run.timers.items())
        ),
        pending_children=tuple(
            PendingChild(seq, child.workflow_id, child.workflow_type, child.run_id)
            for seq, child in sorted(run.children.items())
            if not child.closed
        ),
    )


def _activity(state: ActivityState) -> PendingActivity:
    scheduled = state.scheduled
    policy = scheduled.retry_policy
    s2c = scheduled.schedule_to_close_timeout_ms
    return PendingActivity(
        seq=scheduled.seq,
        activity_type=scheduled.activity_type,
        task_queue=scheduled.task_queue,
        state=_STATES[state.phase],
        attempt=state.attempt,
        # No policy: the activity is not retried (`runtime.retry.next_attempt_delay_ms`).
        maximum_attempts=1 if policy is None else policy.maximum_attempts,
        scheduled_time_ms=state.scheduled_time_ms,
        attempt_scheduled_time_ms=state.attempt_time_ms,
        expiration_time_ms=state.scheduled_time_ms + s2c if s2c else None,
        last_started_time_ms=state.last_started_time_ms,
        last_heartbeat_time_ms=state.last_heartbeat_time_ms,
        heartbeat_details=state.heartbeat_details,
        last_failure=state.last_failure,
        next_attempt_time_ms=state.next_attempt_time_ms,
    )
