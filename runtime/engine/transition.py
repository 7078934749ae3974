"""The result of handling one inbox message: everything the host must write, atomically."""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.events import HistoryEvent
from runtime.messages import DurableTimer, InboxMessage, Reply, StatusRecord, TaskRecord


@dataclass
class Transition:
    """New history events plus the outbound records they imply.

    The host commits all of it in one transaction (Kafka) or applies it at once (tests):
    `events` to the history, `tasks` to ``tasks.<queue>``, `timers` to schedule and
    `cancelled_timers` to tombstone, `messages` to other workflows' inboxes, `replies` to
    clients, and `status` when the run's status changed.
    """

    events: list[HistoryEvent] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    timers: list[DurableTimer] = field(default_factory=list)
    cancelled_timers: list[tuple[str, str]] = field(default_factory=list)
    messages: list[InboxMessage] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    status: StatusRecord | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.events
            or self.tasks
            or self.timers
            or self.cancelled_timers
            or self.messages
            or self.replies
            or self.status
        )
