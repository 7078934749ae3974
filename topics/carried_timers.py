"""Timers a ``<ns>.history`` record carries in its headers instead of on ``<ns>.timers``.

An activity's deadlines (schedule-to-start, start-to-close, heartbeat, schedule-to-close)
and its retry backoffs are set and cleared by the same transitions that write its history
events (`ActivityScheduled`, `ActivityCompleted`, ...). Writing each of them to the timers
topic as well cost two more records per attempt (the timer, then its tombstone), a dozen
more partitions in every transaction, and a timer the partition owner only ever fired to
itself. So the history record of the transition carries them — and the retention timer
that a run's close sets, for the same reasons:

- ``chronik.timer`` — a timer set: its ``<ns>.timers`` value (Avro ``DurableTimer``);
- ``chronik.timer.clear`` — a timer cleared (fired or cancelled): its ``<ns>.timers`` key
  (Avro ``TimerKey``).

Both are the Avro records of the timers topic, so the contract stays the `avro/` files.
Headers apply in order, after the record itself; whoever rebuilds a partition from history
(`workers.restore`) rebuilds its pending activity deadlines with it.
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime.messages import DurableTimer
from topics import serde

SET = "chronik.timer"
CLEAR = "chronik.timer.clear"

#: (workflow id, timer id, fire time, timer record — None for a clear), as the store takes it
TimerChange = tuple[str, str, int, bytes | None]


def set_header(timer: DurableTimer) -> tuple[str, bytes]:
    return SET, serde.encode_timer(timer)


def clear_header(workflow_id: str, timer_id: str) -> tuple[str, bytes]:
    return CLEAR, serde.encode_timer_key(workflow_id, timer_id)


def changes(headers: Iterable[tuple[str, bytes]]) -> list[TimerChange]:
    """The timer changes in a history record's headers, in order; other headers are skipped."""
    out: list[TimerChange] = []
    for name, value in headers:
        if name == SET:
            timer = serde.decode_timer(value)
            out.append((timer.workflow_id, timer.timer_id, timer.fire_at_ms, value))
        elif name == CLEAR:
            key = serde.decode_timer_key(value)
            out.append((key.workflow_id, key.timer_id, 0, None))
    return out
