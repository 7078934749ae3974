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

from collections.abc import Iterable, Sequence

from runtime.messages import DurableTimer
from topics import serde
from topics.codec import Place

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
    pairs = list(headers)
    return [c for c in decode_changes(pairs, [(None, None, None)] * len(pairs)) if c is not None]


def decode_changes(
    headers: Sequence[tuple[str, bytes]], where: Sequence[Place]
) -> list[TimerChange | None]:
    """The timer change of each header of many records (None: not a timer header);
    ``where`` says which record each header came from, for the error.

    Rebuilding a store reads a timer header for every other history record: the set and
    clear headers of a whole batch are decoded in one call each (`Codec.read_many`),
    which took a quarter of the restore's CPU off decoding them one by one.
    """
    out: list[TimerChange | None] = [None] * len(headers)
    sets = [i for i, (name, _) in enumerate(headers) if name == SET]
    clears = [i for i, (name, _) in enumerate(headers) if name == CLEAR]
    set_values = [headers[i][1] for i in sets]
    timers = serde.read_timers(set_values, [where[i] for i in sets])
    for i, value, (workflow_id, timer_id, fire_at) in zip(sets, set_values, timers, strict=True):
        out[i] = (workflow_id, timer_id, fire_at, value)
    keys = serde.read_timer_keys([headers[i][1] for i in clears], [where[i] for i in clears])
    for i, (workflow_id, timer_id) in zip(clears, keys, strict=True):
        out[i] = (workflow_id, timer_id, 0, None)
    return out
