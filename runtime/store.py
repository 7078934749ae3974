"""The local state of one owned partition: a RocksDB cache of ``history[p]`` and ``timers[p]``.

RocksDB is never the source of truth. It holds the records exactly as they are on the
topics (encoded bytes, nothing re-encoded), indexed for the two questions a partition
owner asks: "what is the history of workflow W" and "which timers are due". Next to them it
keeps the topic offsets it has applied, written in the same write batch as the records, so
a restore resumes from where this store stopped and never from consumer-group offsets.

Key layout (all integers big-endian, so byte order is numeric order):

=====================================  ==============================================
``H`` id ``event_id:8``                 history event record (value as on the topic)
``T`` id ``timer_id``                   timer record, value ``fire_at:8`` + record
``D`` ``fire_at:8`` id ``timer_id``     due index, empty value
``E`` ``fire_at:8`` id ``timer_id``     due index of background timers, empty value
``C`` topic name                        next offset of that topic to apply
``F``                                   fresh-as-of time ``ms:8`` (see below)
=====================================  ==============================================

where ``id`` is the workflow id prefixed by its length (2 bytes), so no id is a prefix of
another. Background timers (ids starting with ``~``: housekeeping such as the end of a
closed workflow's retention) have a due index of their own, so that a backlog of them —
say, a day of retention ends that came due while the owner was down — never delays the
timers workflows wait on.

The fresh-as-of time is a wall-clock time before which no record of the store's topic
partitions at or past its checkpoints was appended: the store had seen everything the
topics held then. Kafka's log cleaner drops a tombstone ``delete.retention.ms`` after it
first compacted it, so a store whose fresh-as-of time is older than that may resume past
tombstones that are gone; the restore (`workers.restore`) rebuilds such a store. The time
only moves forward, and is written in the same batch as the records it vouches for.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_HISTORY = b"H"
_TIMER = b"T"
_DUE = b"D"
_DUE_BACKGROUND = b"E"
#: A timer id starting with this is a background timer (see the module docstring).
BACKGROUND_TIMER_PREFIX = "~"
_CHECKPOINT = b"C"
_FRESH_AS_OF = b"F"
#: Sorts after every ``event_id:8`` of an id: seeking here skips the id's whole history.
_AFTER_EVENTS = b"\xff" * 9
#: A history begins with event 1 (ids count on across runs) and is only ever deleted whole.
_FIRST_EVENT = _U64.pack(1)


def _due_index(timer_id: str) -> bytes:
    return _DUE_BACKGROUND if timer_id.startswith(BACKGROUND_TIMER_PREFIX) else _DUE


def _id_prefix(workflow_id: str) -> bytes:
    encoded = workflow_id.encode()
    return _U16.pack(len(encoded)) + encoded


def _read_id(buffer: bytes, at: int) -> tuple[str, int]:
    (length,) = _U16.unpack_from(buffer, at)
    start = at + _U16.size
    return buffer[start : start + length].decode(), start + length


@dataclass(slots=True)
class _DueIndex:
    """One due index: its key prefix, where scans resume, its earliest fire time."""

    prefix: bytes
    resume: bytes = b""
    earliest: int | None = None
    known: bool = False

    def __post_init__(self) -> None:
        self.resume = self.resume or self.prefix


@dataclass(frozen=True, slots=True)
class DueTimer:
    fire_at_ms: int
    workflow_id: str
    timer_id: str
    record: bytes


@dataclass(slots=True)
class StoreBatch:
    """Changes to apply atomically; built by the restore loop or after a Kafka commit."""

    events: list[tuple[str, int, bytes | None]] = field(default_factory=list)
    timers: list[tuple[str, str, int, bytes | None]] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)
    #: The store's fresh-as-of time once this batch is written (see the module docstring).
    fresh_as_of_ms: int | None = None

    def put_event(self, workflow_id: str, event_id: int, record: bytes | None) -> None:
        """``record=None`` is a tombstone: the event is deleted (history GC)."""
        self.events.append((workflow_id, event_id, record))

    def put_timer(
        self, workflow_id: str, timer_id: str, fire_at_ms: int, record: bytes | None
    ) -> None:
        """``record=None`` removes the timer (fired or cancelled)."""
        self.timers.append((workflow_id, timer_id, fire_at_ms, record))

    def checkpoint(self, topic: str, next_offset: int) -> None:
        self.checkpoints[topic] = max(next_offset, self.checkpoints.get(topic, 0))

    def mark_fresh(self, as_of_ms: int) -> None:
        """Vouch that no record past the checkpoints was appended before ``as_of_ms``.

        Only the caller knows when that holds: a restore that reached the end it read
        when it began, an owner whose transaction committed (it is the topics' only
        writer), a reader whose last record was appended then.
        """
        if self.fresh_as_of_ms is None or as_of_ms > self.fresh_as_of_ms:
            self.fresh_as_of_ms = as_of_ms

    def __bool__(self) -> bool:
        return bool(
            self.events or self.timers or self.checkpoints or self.fresh_as_of_ms is not None
        )


def _options() -> Options:
    """Whole-key bloom filters on the tables and the memtable, for point reads of new ids."""
    options = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    options.set_memtable_prefix_bloom_ratio(0.05)
    options.set_memtable_whole_key_filtering(True)
    return options


class PartitionStore:
    """One RocksDB per owned partition, under ``<state_dir>/<namespace>/<partition>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), _options())
        # Per due index: where the last scan stopped (scanning from the start each time
        # would walk the tombstones of every timer fired since the last compaction), and
        # the earliest fire time (None: no timer), kept up to date by writes, known or not.
        self._due = {index: _DueIndex(index) for index in (_DUE, _DUE_BACKGROUND)}
        raw = self._db.get(_FRESH_AS_OF)
        self._fresh_as_of: int | None = None if raw is None else int(_U64.unpack(raw)[0])

    def close(self) -> None:
        self._db.close()

    def reset(self) -> None:
        """Delete everything, on disk too, and go on as an empty store at the same path.

        For a store the restore cannot bring up to date (it may hold records whose
        tombstones are gone): rebuilt from offset 0, it is exact again. The object stays
        valid, so whoever holds it goes on using it.
        """
        self._db.close()
        self.destroy(self.path)
        self._open()

    @staticmethod
    def destroy(path: Path) -> None:
        Rdict.destroy(str(path), Options(raw_mode=True))

    # --- checkpoints -------------------------------------------------------------

    def checkpoint(self, topic: str) -> int | None:
        """The next offset of ``topic`` to apply, or None for a store that never saw it."""
        raw = self._db.get(_CHECKPOINT + topic.encode())
        return None if raw is None else int(_U64.unpack(raw)[0])

    def checkpointed_topics(self) -> set[str]:
        """Every topic the store holds a checkpoint of: the topics it is a cache of."""
        return {key[len(_CHECKPOINT) :].decode() for key, _ in self._scan(_CHECKPOINT)}

    def fresh_as_of(self) -> int | None:
        """The fresh-as-of time (module docstring), or None: never vouched for — an empty
        store, or one written before this time was kept."""
        return self._fresh_as_of

    # --- history -----------------------------------------------------------------

    def history(self, workflow_id: str) -> list[bytes]:
        """Every stored event record of the workflow id, in event-id order."""
        return [record for _, record in self.events(workflow_id)]

    def events(self, workflow_id: str) -> list[tuple[int, bytes]]:
        """``(event id, record)`` of every stored event of the workflow id, in order.

        Most lookups are for new workflow ids: a point read of event 1, which the bloom
        filters answer, spares them a range scan (an iterator over every level).
        """
        prefix = _HISTORY + _id_prefix(workflow_id)
        if self._db.get(prefix + _FIRST_EVENT) is None:
            return []
        at = len(prefix)
        return [(int(_U64.unpack_from(key, at)[0]), value) for key, value in self._scan(prefix)]

    def workflow_ids(self, after: str | None = None) -> Iterator[tuple[str, bytes]]:
        """Each workflow id with history here, in key order, with its last event record.

        One seek per id, however long its history: the iterator jumps past an id's events
        instead of walking them. ``after`` resumes a listing where the previous one stopped.
        What a store holds, for tools and tests; the worker itself never walks all ids
        (retention is a timer per closed workflow).
        """
        iterator = self._db.iter()
        try:
            start = _HISTORY if after is None else _HISTORY + _id_prefix(after) + _AFTER_EVENTS
            iterator.seek(start)
            while iterator.valid():
                key: bytes = iterator.key()
                if not key.startswith(_HISTORY):
                    return
                workflow_id, _ = _read_id(key, 1)
                prefix = _HISTORY + _id_prefix(workflow_id)
                iterator.seek_for_prev(prefix + _AFTER_EVENTS)
                last: bytes = iterator.value()
                yield workflow_id, last
                iterator.seek(prefix + _AFTER_EVENTS)
        finally:
            del iterator

    def event_ids(self, workflow_id: str) -> list[int]:
        """The event ids stored for the workflow (what a GC must tombstone)."""
        return [event_id for event_id, _ in self.events(workflow_id)]

    # --- timers ------------------------------------------------------------------

    def due_timers(
        self, now_ms: int, limit: int = 1000, *, background: bool = False
    ) -> list[DueTimer]:
        """Timers whose fire time has come, earliest first, at most ``limit``: the
        workflows' timers, or with ``background`` the background timers."""
        index = self._due[_DUE_BACKGROUND if background else _DUE]
        earliest = self._earliest_of(index)
        if earliest is None or earliest > now_ms:
            return []
        due: list[DueTimer] = []
        next_fire_at: int | None = None
        for key, _ in self._scan(index.prefix, start=index.resume):
            (fire_at,) = _U64.unpack_from(key, 1)
            if fire_at > now_ms or len(due) >= limit:
                next_fire_at = fire_at
                break
            workflow_id, at = _read_id(key, 1 + _U64.size)
            timer_id = key[at:].decode()
            stored = self._db.get(_TIMER + key[1 + _U64.size :])
            if stored is not None:
                due.append(DueTimer(fire_at, workflow_id, timer_id, stored[_U64.size :]))
        if due:
            index.resume = index.prefix + _U64.pack(due[0].fire_at_ms)
        # Where the scan stopped is the next fire time once the due ones are gone; until
        # their transaction is applied (or if it aborts) they are the earliest still.
        index.earliest = due[0].fire_at_ms if due else next_fire_at
        index.known = True
        return due

    def next_fire_at(self) -> int | None:
        """The earliest fire time of any timer, or None; it may be early, never late.

        Owners ask on every loop step, so it is kept in memory: a new timer can only make
        it earlier, and a timer removed before it fires leaves it early — which costs one
        `due_timers` scan that finds nothing due and then knows the true next fire time.
        """
        times = [t for i in self._due.values() if (t := self._earliest_of(i)) is not None]
        return min(times, default=None)

    def _earliest_of(self, index: _DueIndex) -> int | None:
        if not index.known:
            index.earliest = None
            for key, _ in self._scan(index.prefix, start=index.resume):
                index.earliest = int(_U64.unpack_from(key, 1)[0])
                break
            index.known = True
        return index.earliest

    def pending_timer_count(self) -> int:
        return sum(1 for _ in self._scan(_TIMER))

    # --- writes ------------------------------------------------------------------

    def write(self, batch: StoreBatch) -> None:
        """Apply ``batch`` atomically: records and checkpoints land together or not at all."""
        rocks = WriteBatch(raw_mode=True)
        # A batch holds a few events of each id (a restore's, thousands of records).
        prefixes: dict[str, bytes] = {}
        for workflow_id, event_id, record in batch.events:
            prefix = prefixes.get(workflow_id)
            if prefix is None:
                prefix = prefixes[workflow_id] = _HISTORY + _id_prefix(workflow_id)
            key = prefix + _U64.pack(event_id)
            if record is None:
                rocks.delete(key)
            else:
                rocks.put(key, record)
        # Only the last change of a timer within the batch matters, and the previous due
        # key to remove is the one on disk.
        final = {(wid, tid): (fire_at, record) for wid, tid, fire_at, record in batch.timers}
        for (workflow_id, timer_id), (fire_at_ms, record) in final.items():
            self._stage_timer(rocks, workflow_id, timer_id, fire_at_ms, record)
        for topic, offset in batch.checkpoints.items():
            rocks.put(_CHECKPOINT + topic.encode(), _U64.pack(offset))
        fresh = batch.fresh_as_of_ms
        if fresh is not None and (self._fresh_as_of is None or fresh > self._fresh_as_of):
            rocks.put(_FRESH_AS_OF, _U64.pack(fresh))
        else:
            fresh = None
        self._db.write(rocks)
        if fresh is not None:
            self._fresh_as_of = fresh

    def _stage_timer(
        self,
        rocks: WriteBatch,
        workflow_id: str,
        timer_id: str,
        fire_at_ms: int,
        record: bytes | None,
    ) -> None:
        suffix = _id_prefix(workflow_id) + timer_id.encode()
        index = self._due[_due_index(timer_id)]
        previous = self._db.get(_TIMER + suffix)
        if previous is not None:
            rocks.delete(index.prefix + previous[: _U64.size] + suffix)
        if record is None:
            if previous is not None:  # else nothing on disk to remove
                rocks.delete(_TIMER + suffix)
            return
        rocks.put(_TIMER + suffix, _U64.pack(fire_at_ms) + record)
        due_key = index.prefix + _U64.pack(fire_at_ms) + suffix
        rocks.put(due_key, b"")
        index.resume = min(index.resume, due_key[: 1 + _U64.size])
        if index.known and (index.earliest is None or fire_at_ms < index.earliest):
            index.earliest = fire_at_ms

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        iterator = self._db.iter()
        try:
            iterator.seek(start if start is not None else prefix)
            while iterator.valid():
                key: bytes = iterator.key()
                if not key.startswith(prefix):
                    return
                yield key, iterator.value()
                iterator.next()
        finally:
            del iterator
