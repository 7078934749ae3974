"""Deterministic identifiers: run ids and the ids of the durable timers the engine owns.

Both end up in Kafka (run ids in every record, timer ids as timer-service keys), so they
must come out the same wherever a history is replayed; and the timer ids are parsed back
when a timer fires, so the one place that spells them is also the one that reads them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

EXECUTION_TIMEOUT_TIMER = "workflow:execution_timeout"


def derive_run_id(workflow_id: str, request_id: str, event_id: int) -> str:
    """Deterministic run id: the same start replayed anywhere gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chronik:{workflow_id}:{request_id}:{event_id}"))


def activity_timer_id(seq: int, attempt: int, kind: str) -> str:
    """A per-attempt deadline: `kind` is schedule_to_start, start_to_close or heartbeat."""
    return f"activity:{seq}:{attempt}:{kind}"


def schedule_to_close_timer_id(seq: int) -> str:
    """The one deadline of an activity that spans all its attempts."""
    return f"activity:{seq}:schedule_to_close"


def retry_timer_id(seq: int, attempt: int) -> str:
    """The backoff that ends when `attempt` is dispatched."""
    return f"retry:{seq}:{attempt}"


def is_activity_timer(timer_id: str) -> bool:
    """An activity's deadline or retry backoff: set and cleared with its history events.

    Hosts may keep these with the history instead of beside it (the Kafka worker carries
    them in history record headers); every other timer is the workflow code's own.
    """
    return timer_id.startswith(("activity:", "retry:"))


def sleep_timer_id(seq: int) -> str:
    """A timer the workflow code started (sleeps, `wait_for` timeouts)."""
    return f"sleep:{seq}"


@dataclass(frozen=True, slots=True)
class TimerId:
    """A parsed timer id: `family` is its first segment, `seq`/`attempt`/`kind` the rest.

    Activity timers read `kind` from the last segment, so the per-attempt ids and the
    attempt-less schedule-to-close id parse alike.
    """

    family: str
    seq: int = 0
    attempt: int = 0
    kind: str = ""


def parse_timer_id(timer_id: str) -> TimerId:
    parts = timer_id.split(":")
    match parts[0]:
        case "sleep":
            return TimerId("sleep", int(parts[1]))
        case "retry":
            return TimerId("retry", int(parts[1]), int(parts[2]))
        case "activity":
            return TimerId("activity", int(parts[1]), kind=parts[-1])
        case family:
            return TimerId(family)


def start_signal_id(start_request_id: str) -> str:
    """The request id a signal-with-start's signal is recorded with: its start's, marked,
    so no plain signal's id can pass for it (replay tells the pair by it)."""
    return f"start-signal:{start_request_id}"
