"""`Effects`: the outbound side of the message being handled, and nothing while replaying.

Live and replay apply events through the same code; what differs is only whether replies,
tasks, timers and messages to other workflows are emitted. Keeping that one difference
behind `Effects` lets the rest of the engine call it unconditionally.
"""

from __future__ import annotations

from runtime.engine.state import ActivityState, Phase, RunState
from runtime.engine.transition import Transition
from runtime.messages import (
    CancelActivityTask,
    DurableTimer,
    InboxMessage,
    Reply,
    ReplyBody,
    StatusRecord,
    TaskRecord,
)


class Effects:
    """Collects one `Transition` while live (`begin`..`end`); discards everything otherwise."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.transition: Transition | None = None

    @property
    def live(self) -> bool:
        """True while handling a message; False while replaying recorded events."""
        return self.transition is not None

    def begin(self) -> Transition:
        self.transition = Transition()
        return self.transition

    def end(self) -> None:
        self.transition = None

    def reply(self, reply_to: str | None, request_id: str, body: ReplyBody) -> None:
        if self.transition is not None and reply_to:
            self.transition.replies.append(Reply(reply_to, request_id, self.workflow_id, body))

    def send(self, message: InboxMessage) -> None:
        if self.transition is not None:
            self.transition.messages.append(message)

    def task(self, task: TaskRecord) -> None:
        if self.transition is not None:
            self.transition.tasks.append(task)

    def cancel_attempt(self, run: RunState, state: ActivityState) -> None:
        """Tell the activity worker to stop the current attempt, if one may be running."""
        if state.phase in (Phase.SCHEDULED, Phase.STARTED) and self.transition is not None:
            self.transition.tasks.append(
                CancelActivityTask(
                    self.workflow_id,
                    run.run_id,
                    state.scheduled.seq,
                    state.attempt,
                    state.scheduled.task_queue,
                )
            )

    def status(self, record: StatusRecord) -> None:
        if self.transition is not None:
            self.transition.status = record

    def arm(self, run: RunState, timer_id: str, fire_at_ms: int) -> None:
        """Set a deadline: run state always (replay needs it too), the timer record live."""
        run.deadlines[timer_id] = fire_at_ms
        fx = self.transition
        if fx is not None:
            # The last operation on a timer id within one transition wins, so the host may
            # apply `timers` and `cancelled_timers` in any order.
            key = (self.workflow_id, timer_id)
            fx.cancelled_timers = [k for k in fx.cancelled_timers if k != key]
            fx.timers = [t for t in fx.timers if t.timer_id != timer_id]
            fx.timers.append(DurableTimer(self.workflow_id, run.run_id, timer_id, fire_at_ms))

    def disarm(self, run: RunState, timer_id: str) -> None:
        """Drop a deadline; the host tombstones the timer only if one was armed."""
        fx = self.transition
        if run.deadlines.pop(timer_id, None) is not None and fx is not None:
            fx.timers = [t for t in fx.timers if t.timer_id != timer_id]
            fx.cancelled_timers.append((self.workflow_id, timer_id))
