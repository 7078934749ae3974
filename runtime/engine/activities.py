"""The life of one activity: attempts, their deadlines, retries, and closing.

An activity is scheduled once and dispatched once per attempt. Each attempt carries its
own deadlines (schedule-to-start, start-to-close, heartbeat), the activity as a whole at
most one (schedule-to-close), and the gap between attempts is a retry timer. These
functions keep the deadlines and the `ActivityState` in step, so that closing or retrying
an activity can never leave a timer armed behind it.
"""

from __future__ import annotations

from runtime.engine.effects import Effects
from runtime.engine.ids import activity_timer_id, retry_timer_id, schedule_to_close_timer_id
from runtime.engine.state import ActivityState, Phase, RunState
from runtime.events import (
    ActivityAttemptFailed,
    ActivityFailed,
    ActivityScheduled,
    ActivityTimedOut,
)
from runtime.messages import ActivityTask
from runtime.payloads import Failure, Payload
from runtime.retry import next_attempt_delay_ms

_ATTEMPT_TIMERS = ("schedule_to_start", "start_to_close", "heartbeat")
#: Timeouts that end the activity outright; the others end one attempt and may retry.
FINAL_TIMEOUTS = ("schedule_to_close", "schedule_to_start")


def schedule(fx: Effects, run: RunState, scheduled: ActivityScheduled, ts: int) -> None:
    state = ActivityState(scheduled, ts)
    run.activities[scheduled.seq] = state
    if scheduled.schedule_to_close_timeout_ms:
        fx.arm(
            run,
            schedule_to_close_timer_id(scheduled.seq),
            ts + scheduled.schedule_to_close_timeout_ms,
        )
    dispatch_attempt(fx, run, state, ts)


def dispatch_attempt(fx: Effects, run: RunState, state: ActivityState, ts: int) -> None:
    """Hand the current attempt to the activity workers and arm its deadlines."""
    state.phase = Phase.SCHEDULED
    state.attempt_time_ms, state.next_attempt_time_ms = ts, None
    sched = state.scheduled
    seq, attempt = sched.seq, state.attempt
    if sched.schedule_to_start_timeout_ms:
        fx.arm(
            run,
            activity_timer_id(seq, attempt, "schedule_to_start"),
            ts + sched.schedule_to_start_timeout_ms,
        )
    # Without a schedule-to-start timeout, start-to-close is armed at dispatch too, so a
    # host that never reports starts is still protected; ActivityStarted re-arms it.
    if sched.start_to_close_timeout_ms and not sched.schedule_to_start_timeout_ms:
        timer_id = activity_timer_id(seq, attempt, "start_to_close")
        fx.arm(run, timer_id, ts + sched.start_to_close_timeout_ms)
    arm_heartbeat(fx, run, state, ts)
    fx.task(
        ActivityTask(
            workflow_id=fx.workflow_id,
            run_id=run.run_id,
            workflow_type=run.workflow_type,
            seq=seq,
            attempt=attempt,
            activity_type=sched.activity_type,
            task_queue=sched.task_queue,
            input=sched.input,
            scheduled_time_ms=ts,
            start_to_close_timeout_ms=sched.start_to_close_timeout_ms,
            heartbeat_timeout_ms=sched.heartbeat_timeout_ms,
            heartbeat_details=state.heartbeat_details,
            report_start=bool(sched.schedule_to_start_timeout_ms),
            close_deadline_ms=(
                state.scheduled_time_ms + sched.schedule_to_close_timeout_ms
                if sched.schedule_to_close_timeout_ms
                else 0
            ),
            first_scheduled_time_ms=state.scheduled_time_ms,
            schedule_to_close_timeout_ms=sched.schedule_to_close_timeout_ms,
        )
    )


def started(fx: Effects, run: RunState, state: ActivityState, ts: int) -> None:
    """A worker picked the attempt up: schedule-to-start is over, start-to-close begins."""
    state.phase = Phase.STARTED
    state.last_started_time_ms = ts
    sched = state.scheduled
    fx.disarm(run, activity_timer_id(sched.seq, state.attempt, "schedule_to_start"))
    if sched.start_to_close_timeout_ms:
        fx.arm(
            run,
            activity_timer_id(sched.seq, state.attempt, "start_to_close"),
            ts + sched.start_to_close_timeout_ms,
        )
    arm_heartbeat(fx, run, state, ts)


def heartbeat(
    fx: Effects, run: RunState, state: ActivityState, details: tuple[Payload, ...], ts: int
) -> None:
    """Keep the details for the next attempt and push the heartbeat deadline out."""
    state.heartbeat_details = details
    state.last_heartbeat_time_ms = ts
    arm_heartbeat(fx, run, state, ts)


def arm_heartbeat(fx: Effects, run: RunState, state: ActivityState, ts: int) -> None:
    timeout = state.scheduled.heartbeat_timeout_ms
    if timeout:
        timer_id = activity_timer_id(state.scheduled.seq, state.attempt, "heartbeat")
        fx.arm(run, timer_id, ts + timeout)


def back_off(
    fx: Effects, run: RunState, state: ActivityState, failed: ActivityAttemptFailed, ts: int
) -> None:
    """The attempt failed and will be retried: its deadlines give way to the retry timer."""
    end_attempt(fx, run, state)
    state.phase = Phase.BACKOFF
    state.last_failure = failed.failure
    state.next_attempt_time_ms = ts + failed.next_attempt_delay_ms
    fx.arm(run, retry_timer_id(failed.seq, failed.attempt + 1), state.next_attempt_time_ms)


def retry(fx: Effects, run: RunState, state: ActivityState, attempt: int, ts: int) -> None:
    fx.disarm(run, retry_timer_id(state.scheduled.seq, attempt))
    state.attempt = attempt
    dispatch_attempt(fx, run, state, ts)


def end_attempt(fx: Effects, run: RunState, state: ActivityState) -> None:
    for kind in _ATTEMPT_TIMERS:
        fx.disarm(run, activity_timer_id(state.scheduled.seq, state.attempt, kind))


def close(fx: Effects, run: RunState, seq: int) -> ActivityState:
    """The activity is over (any outcome): no deadline of it may fire any more."""
    state = run.activities[seq]
    end_attempt(fx, run, state)
    fx.disarm(run, schedule_to_close_timer_id(seq))
    fx.disarm(run, retry_timer_id(seq, state.attempt + 1))
    state.phase = Phase.CLOSED
    return state


def after_failure(
    state: ActivityState, failure: Failure, now_ms: int
) -> ActivityAttemptFailed | ActivityTimedOut | ActivityFailed:
    """What a failed attempt becomes: a retry per the policy, else the final failure.

    A retry that would start after the schedule-to-close deadline is not worth making, so
    the failure at hand is final then.
    """
    sched, attempt = state.scheduled, state.attempt
    delay = next_attempt_delay_ms(sched.retry_policy, attempt, failure)
    s2c = sched.schedule_to_close_timeout_ms
    if delay is not None and s2c and now_ms + delay >= state.scheduled_time_ms + s2c:
        delay = None
    if delay is not None:
        return ActivityAttemptFailed(sched.seq, attempt, failure, delay)
    if failure.kind == "timeout":
        return ActivityTimedOut(sched.seq, attempt, failure)
    return ActivityFailed(sched.seq, attempt, failure)


def timeout_failure(kind: str) -> Failure:
    return Failure(f"activity {kind.replace('_', '-')} timeout", kind="timeout", timeout_type=kind)
