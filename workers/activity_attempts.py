"""The activity worker's record of each attempt it runs, and what the attempt's end means.

An attempt can end because its activity returned, because the workflow cancelled it,
because a deadline the engine also keeps passed, or because the worker stops; each asks
for a different report (or none), and a wrong one changes what the workflow sees. These
rules, and the state an attempt carries while it runs (its heartbeats, its redeliveries,
why it was cancelled), live here, apart from the Kafka I/O of `workers.activity_worker`,
so that they can be read and tested on their own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

import structlog

from runtime.engine.activities import timeout_failure
from runtime.engine.activity_executor import CANCEL_GRACE_S
from runtime.messages import ActivityFailedReport, ActivityTask, InboxMessage
from runtime.payloads import Payload
from workers.activity_reports import Outcome
from workers.offsets import PartitionProgress

log = structlog.get_logger(__name__)


class CancelReason(StrEnum):
    """Why an attempt was cancelled, which decides what the worker reports for it."""

    #: The workflow asked (`CancelActivityTask`): "cancelled" (the engine closed the
    #: activity already, and ignores it).
    REQUESTED = "requested"
    #: The worker stops: nothing, and the offset stays open, so the same attempt runs
    #: again on the partition's next owner.
    STOPPING = "stopping"
    #: A deadline the engine also keeps: the timeout the engine would record.
    START_TO_CLOSE = "start_to_close"
    SCHEDULE_TO_CLOSE = "schedule_to_close"
    HEARTBEAT = "heartbeat"


@dataclass(slots=True)
class RunningAttempt:
    """An attempt from its dispatch (it may wait for a slot) to its end: one per attempt
    key, so that a redelivery of an attempt still running joins it instead of running it
    twice at once."""

    task: ActivityTask
    cancelled: asyncio.Event
    last_heartbeat: float = 0.0
    #: The newest details not sent yet, and the send scheduled for them.
    unsent: tuple[Payload, ...] | None = None
    trailing: asyncio.TimerHandle | None = None
    #: Further deliveries of this very attempt (a partition lost and regained while it
    #: ran): they finish with it instead of running it a second time alongside.
    redelivered: list[tuple[PartitionProgress, int]] = field(default_factory=list)
    #: When the activity last heartbeat (sent or held back), and the check that cancels
    #: the attempt once its heartbeat timeout passes without one.
    last_beat: float = 0.0
    watchdog: asyncio.TimerHandle | None = None
    #: Why the attempt was cancelled: the first reason counts.
    cancel_reason: CancelReason | None = None
    #: The attempt ended with the activity still running: it ignored its cancellation.
    abandoned: bool = False

    def cancel(self, reason: CancelReason) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancelled.set()

    def abandon(self) -> None:
        self.abandoned = True


class QueuedAttempt(NamedTuple):
    """A task waiting for a slot."""

    running: RunningAttempt
    progress: PartitionProgress
    offset: int
    partition: int


def outcome(report: Outcome, reason: CancelReason | None) -> Outcome | None:
    """What to report for an attempt that ended as ``report``; None: nothing, yet.

    An attempt the worker cancelled ends as "cancelled". That is right when the workflow
    asked for it. At its own deadlines the worker reports the timeout instead, as the
    engine records it: the engine keeps the same deadlines, and whichever report comes
    first decides, so "cancelled" turned a timeout into a cancellation the workflow saw
    (`ActivityError` caused by `CancelledError`, not `TimeoutError`) on a last attempt.
    Stopping reports nothing: the attempt is still the engine's current one and runs
    again on the partition's next owner (a "cancelled" spent an attempt).
    """
    cut_short = isinstance(report, ActivityFailedReport) and report.failure.kind == "cancelled"
    if reason is None or reason is CancelReason.REQUESTED or not cut_short:
        return report
    if reason is CancelReason.STOPPING:
        return None
    assert isinstance(report, ActivityFailedReport)
    return replace(report, failure=timeout_failure(reason.value))


def outcome_label(report: InboxMessage | None) -> str:
    """How an attempt ended, for the metrics: completed, failed (the activity raised),
    timeout, cancelled, or stopped (the worker stopped; it runs again elsewhere)."""
    if report is None:
        return "stopped"
    if isinstance(report, ActivityFailedReport):
        kind = report.failure.kind
        return "failed" if kind == "application" else kind
    return "completed"


def first_deadline(task: ActivityTask, now_s: float) -> tuple[float, CancelReason] | None:
    """Seconds from now to the first of start-to-close (the attempt starts now) and the
    schedule-to-close deadline, and which it is; None without either."""
    candidates = []
    if task.start_to_close_timeout_ms:
        candidates.append((task.start_to_close_timeout_ms / 1000, CancelReason.START_TO_CLOSE))
    if task.close_deadline_ms:
        left = max(0.0, task.close_deadline_ms / 1000 - now_s)
        candidates.append((left, CancelReason.SCHEDULE_TO_CLOSE))
    return min(candidates) if candidates else None


def finish_attempt(progress: PartitionProgress, offset: int, running: RunningAttempt) -> None:
    """The attempt is done: its offset, and those of its redeliveries, may be committed."""
    progress.finished(offset)
    for other, redelivered_at in running.redelivered:
        other.finished(redelivered_at)


def log_abandoned(running: RunningAttempt, *, reported: bool) -> None:
    """Name an attempt whose activity ignored its cancellation and runs on unwatched.

    A stopping worker reports nothing for it (it runs again on the partition's next
    owner); a sync one also keeps its thread until it returns, which an operator can only
    see here.
    """
    task = running.task
    reason = running.cancel_reason
    log.warning(
        "activity abandoned: it did not stop within its cancellation grace",
        activity=task.activity_type, workflow_id=task.workflow_id, run_id=task.run_id,
        seq=task.seq, attempt=task.attempt, idempotency_key=task.idempotency_key,
        reason=None if reason is None else reason.value, grace_s=CANCEL_GRACE_S,
        reported=reported,
    )  # fmt: skip
