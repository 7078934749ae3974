"""Record keys of the compacted topics whose key is more than a workflow id.

Compaction keeps the last record per key, so these keys decide what survives: history
is keyed per event (never per workflow, which would erase all but the last event) and
timers per timer. Their Avro schemas (``avro/history_key.avsc``, ``avro/timer_key.avsc``)
must never change: compaction compares key *bytes*, so a re-encoded key would be a
different key. Named tuples, so ``workflow_id, event_id = decode_history_key(raw)`` reads.
"""

from __future__ import annotations

from typing import NamedTuple


class HistoryKey(NamedTuple):
    """Key of one ``<ns>.history`` record: the workflow id and the event's position."""

    workflow_id: str
    event_id: int


class TimerKey(NamedTuple):
    """Key of one ``<ns>.timers`` record; a tombstone with this key removes the timer."""

    workflow_id: str
    timer_id: str
