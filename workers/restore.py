"""Bring partition stores up to date with ``history[p]`` and ``timers[p]``.

The store says where it stopped (its checkpoints); restore reads each topic partition from
there with ``read_committed`` until the consumer position reaches the high watermark —
never "until the record at high - 1", which a transaction marker may occupy. A store that
never saw a topic starts at offset 0, so deleting a state directory loses nothing.

Resuming is only exact if every record appended past the checkpoints is still there, and
on a compacted topic that fails in two ways: the log cleaner drops a tombstone
``delete.retention.ms`` after it first compacted it (a store away for longer never hears
of the history collected meanwhile, and keeps it — mixed with the next run of a reused
workflow id, whose events begin at 1 again), and records below the log start offset are
gone (possible only once ``delete`` was added to the cleanup policy). Such a store is
rebuilt from the start (`rebuild_reason`), as Kafka Streams wipes a store whose changelog
offset is out of range and, since KIP-1259, one older than a configured age.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from runtime.store import PartitionStore, StoreBatch
from topics import carried_timers, serde
from topics.admin import TopicAdmin
from topics.catalogue import TopicNames
from topics.consumed import consume_available, header_pairs
from topics.errors import DecodeError, KafkaUnavailableError
from topics.transient import watermarks

log = structlog.get_logger(__name__)

_WRITE_EVERY = 5_000
#: How long a restore keeps asking an unanswering Kafka for the topics' configuration.
ADMIN_PATIENCE_S = 30.0
#: What a store's age must leave of ``delete.retention.ms`` at most (half of it when that
#: is shorter): the restore reads the tombstones some time after it decided to resume (up
#: to its timeout, five minutes), an owner that lost its partitions without knowing goes
#: on for a session timeout, and the broker's clock is not the worker's.
MAX_SAFETY_MARGIN_MS = 3_600_000
#: How stale the stored fresh-as-of time of a store that applied nothing new may become
#: before it is written alone (by an owner's commit, a timer service's check): writing it
#: with every transaction or record would cost more than an hour of margin needs.
FRESH_AS_OF_EVERY_MS = 60_000
#: How long `mark_caught_up` waits for one partition's end.
_CATCH_UP_QUERY_S = 2.0


class Rebuild(StrEnum):
    """Why a store cannot resume from its checkpoints."""

    #: Records were deleted between the checkpoint and the log start offset, unseen.
    BELOW_LOG_START = "below the log start"
    #: The checkpoint is past the partition's end: the topic was deleted and created
    #: again, or lost records (an unclean leader election). Its offsets name other records.
    BEYOND_END = "beyond the end"
    #: Away long enough that tombstones appended meanwhile may be gone.
    STALE = "stale"
    #: Written before stores kept their fresh-as-of time: how stale is unknown.
    NO_FRESH_AS_OF = "no fresh-as-of time"
    #: Holds a checkpoint of a topic its owner no longer reads (``chronik worker
    #: --no-timers`` after a run without it): that topic's records in it go stale, and its
    #: fresh-as-of time, vouching for every checkpoint, would not be true of that one.
    UNREAD_TOPIC = "holds a topic no longer read"


@dataclass(frozen=True, slots=True)
class TopicView:
    """One topic partition of a store, as the restore finds it before reading."""

    topic: str
    #: The store's next offset to apply, or None: it never read this topic.
    checkpoint: int | None
    #: The partition's log start offset: nothing below it can be read any more.
    log_start: int
    delete_retention_ms: int
    #: The partition's high watermark (None: not known, no check). A checkpoint is at
    #: most this: it is one past a record the topic holds, or the end the restore read.
    end: int | None = None


@dataclass(frozen=True, slots=True)
class RestoreStats:
    partition: int
    history_records: int
    timer_records: int
    seconds: float
    #: Why the store was emptied and read from the start; None: it resumed.
    rebuilt: Rebuild | None = None


class RestoreError(RuntimeError):
    """A partition could not be restored; the worker must not process it."""


class RecordsGoneError(RestoreError):
    """The broker refused an offset the restore had reached or was assigned at as out of
    range: records were deleted (or the topic created again) after its checks."""


#: How often a restore starts over when records go while it runs (`RecordsGoneError`).
_ATTEMPTS_WHEN_GONE = 3


def usable_age_ms(delete_retention_ms: int) -> int:
    """How old a store's fresh-as-of time may be for it to resume: ``delete.retention.ms``
    less a safety margin (`MAX_SAFETY_MARGIN_MS`, or half of it)."""
    return delete_retention_ms - min(delete_retention_ms // 2, MAX_SAFETY_MARGIN_MS)


def rebuild_reason(
    fresh_as_of_ms: int | None, views: Iterable[TopicView], now_ms: int
) -> tuple[Rebuild, TopicView] | None:
    """Why a store must be emptied and restored from the start, and for which topic; None
    when it may resume from its checkpoints.

    A tombstone survives at least ``delete.retention.ms`` from the cleaner's first pass
    over it (KIP-534; that pass comes after it was appended), and the store's fresh-as-of
    time is before every record appended past its checkpoints: a store younger than the
    retention (less the margin) still finds every tombstone it missed. A topic the store
    never read is read from its start anyway.
    """
    for view in views:
        if view.checkpoint is None:
            continue
        if view.checkpoint < view.log_start:
            return Rebuild.BELOW_LOG_START, view
        if view.end is not None and view.checkpoint > view.end:
            return Rebuild.BEYOND_END, view
        if fresh_as_of_ms is None:
            return Rebuild.NO_FRESH_AS_OF, view
        if now_ms - fresh_as_of_ms >= usable_age_ms(view.delete_retention_ms):
            return Rebuild.STALE, view
    return None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def restore_partitions(
    kafka_config: dict[str, Any],
    names: TopicNames,
    stores: Mapping[int, PartitionStore],
    *,
    topics: tuple[str, ...] | None = None,
    timeout_s: float = 300.0,
) -> list[RestoreStats]:
    """Catch each store up with ``topics`` of its partition, all through one consumer.

    A rebalance hands a worker several partitions at once; one consumer assigned to all of
    them fetches them together and pays its setup (a client, its connection, metadata)
    once, which was most of the time of restoring a small partition.

    Records deleted while the restore runs (`RecordsGoneError`) make it start over: its checks
    then find the stores concerned below the log start, and rebuild them.
    """
    for _ in range(_ATTEMPTS_WHEN_GONE - 1):
        try:
            return _restore_once(kafka_config, names, stores, topics, timeout_s)
        except RecordsGoneError as error:
            log.warning(
                "records deleted while restoring: checking the stores again", error=str(error)
            )
    return _restore_once(kafka_config, names, stores, topics, timeout_s)


def _restore_once(
    kafka_config: dict[str, Any],
    names: TopicNames,
    stores: Mapping[int, PartitionStore],
    topics: tuple[str, ...] | None,
    timeout_s: float,
) -> list[RestoreStats]:
    started, started_ms = time.monotonic(), _wall_ms()
    wanted = topics if topics is not None else (names.history, names.timers)
    retention = _delete_retention(kafka_config, wanted)
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"{names.namespace}.restore",  # required by the client, never used
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
            # An offset refused as out of range means records the store never saw are
            # gone: never jump past them to an end (librdkafka's default), say so.
            "auto.offset.reset": "error",
        }
    )
    counts = {(topic, p): 0 for topic in wanted for p in stores}
    seconds: dict[int, float] = {}
    try:
        ends, rebuilt = _assign(consumer, stores, wanted, retention, started_ms)
        # A store that vouches for nothing yet (empty, or just emptied) is fresh as of the
        # restore's start even part-way (a crash, a timeout): a tombstone can outlive its
        # first compaction by the retention only, and that compaction also removed every
        # earlier record of its key — so for any record read here, its tombstone stays
        # for the retention after the read began. Resuming keeps what the store vouched.
        from_scratch = {p for p, store in stores.items() if store.fresh_as_of() is None}
        batches = {p: StoreBatch() for p in stores}
        deadline = started + timeout_s
        _time_finished(seconds, stores, ends, started)
        while ends:
            if time.monotonic() > deadline:
                missing = sorted({p for _, p in ends})
                raise RestoreError(f"partitions {missing}: restore did not finish in {timeout_s}s")
            for (topic, p), (applied, last) in _apply_all(consumer, batches, names).items():
                counts[(topic, p)] += applied
                batches[p].checkpoint(topic, last + 1)
            for p, batch in batches.items():
                if len(batch.events) + len(batch.timers) >= _WRITE_EVERY:
                    if p in from_scratch:
                        batch.mark_fresh(started_ms)
                    stores[p].write(batch)
                    batches[p] = StoreBatch()
            ends = _unfinished(consumer, ends, batches)
            _time_finished(seconds, stores, ends, started)
        for p, batch in batches.items():
            # Up to the ends read after ``started_ms``: whatever follows came after it.
            batch.mark_fresh(started_ms)
            stores[p].write(batch)
    except KafkaException as error:
        raise RestoreError(f"partitions {sorted(stores)}: {error}") from error
    finally:
        consumer.close()
    out = []
    for p in stores:
        stats = RestoreStats(
            p,
            counts.get((names.history, p), 0),
            counts.get((names.timers, p), 0),
            seconds[p],
            rebuilt.get(p),
        )
        log.info("partition restored", **asdict(stats))
        out.append(stats)
    return out


def open_restored(
    kafka_config: dict[str, Any],
    names: TopicNames,
    directory: Path,
    numbers: Iterable[int],
    *,
    prefix: str,
    topics: tuple[str, ...] | None = None,
) -> dict[int, PartitionStore]:
    """Open ``<directory>/<prefix>-<p>`` for each partition number and restore them together.

    What an owner does with newly assigned partitions before it processes any of them; a
    failed restore closes the stores again, so the next attempt can open them.
    """
    stores = {
        number: PartitionStore(directory / f"{prefix}-{number}") for number in sorted(numbers)
    }
    try:
        restore_partitions(kafka_config, names, stores, topics=topics)
    except Exception:
        for store in stores.values():
            store.close()
        raise
    return stores


def _time_finished(
    seconds: dict[int, float],
    stores: Mapping[int, PartitionStore],
    ends: Mapping[tuple[str, int], int],
    started: float,
) -> None:
    """Note how long each partition with nothing left to read took (once)."""
    unfinished = {p for _, p in ends}
    for p in stores.keys() - unfinished - seconds.keys():
        seconds[p] = time.monotonic() - started


def _delete_retention(kafka_config: dict[str, Any], topics: tuple[str, ...]) -> dict[str, int]:
    """``delete.retention.ms`` of each topic; a topic without one cannot be restored.

    Asked again for up to ``ADMIN_PATIENCE_S`` while Kafka does not answer: a restore runs
    during a rebalance, when a coordinator or leader may be moving, and giving up at the
    first refusal ended the worker.
    """
    deadline = time.monotonic() + ADMIN_PATIENCE_S
    admin = TopicAdmin(kafka_config)
    while True:
        try:
            retention = admin.delete_retention_ms(list(topics))
            break
        except KafkaUnavailableError as error:
            if time.monotonic() > deadline:
                raise RestoreError(f"restore: {error}") from error
            log.info("topic configuration not answered yet; asking again", error=str(error))
            time.sleep(1.0)
    missing = sorted(set(topics) - retention.keys())
    if missing:
        raise RestoreError(f"restore: no delete.retention.ms for {', '.join(missing)}")
    return retention


def _assign(
    consumer: Consumer,
    stores: Mapping[int, PartitionStore],
    topics: tuple[str, ...],
    retention: Mapping[str, int],
    now_ms: int,
) -> tuple[dict[tuple[str, int], int], dict[int, Rebuild]]:
    """Assign each store's topic partitions at its checkpoints: the ends to reach, and why
    each store that cannot resume (`rebuild_reason`) was emptied to be read from 0."""
    assignment, ends, rebuilt = [], {}, {}
    for partition, store in stores.items():
        marks = {t: watermarks(consumer, TopicPartition(t, partition)) for t in topics}
        views = [
            TopicView(t, store.checkpoint(t), marks[t][0], retention[t], end=marks[t][1])
            for t in topics
        ]
        found = _why_rebuild(store, views, now_ms)
        if found is not None:
            rebuilt[partition] = found[0]
            _log_rebuild(partition, store, *found, now_ms)
            store.reset()
        for topic in topics:
            start = store.checkpoint(topic)
            low, high = marks[topic]
            first = start if start is not None else low
            if first < high:
                ends[(topic, partition)] = high
                offset = OFFSET_BEGINNING if start is None else first
                assignment.append(TopicPartition(topic, partition, offset))
    if assignment:
        consumer.assign(assignment)
    return ends, rebuilt


def _why_rebuild(
    store: PartitionStore, views: list[TopicView], now_ms: int
) -> tuple[Rebuild, dict[str, Any]] | None:
    """`rebuild_reason`, and first whether the store holds a topic it is not read from,
    with what the log says of the topic concerned."""
    unread = sorted(store.checkpointed_topics() - {view.topic for view in views})
    if unread:
        return Rebuild.UNREAD_TOPIC, {"topic": unread[0], "checkpoint": store.checkpoint(unread[0])}
    found = rebuild_reason(store.fresh_as_of(), views, now_ms)
    if found is None:
        return None
    reason, view = found
    return reason, {
        "topic": view.topic,
        "checkpoint": view.checkpoint,
        "log_start": view.log_start,
        "end": view.end,
        "delete_retention_s": view.delete_retention_ms / 1000,
    }


def _log_rebuild(
    partition: int, store: PartitionStore, reason: Rebuild, where: dict[str, Any], now_ms: int
) -> None:
    """Say why a store is read again from the start: records lost below the log start or
    past the end are an operator's doing or a broker's loss (a warning), a store away too
    long or a topic no longer read is not (info)."""
    fresh_as_of = store.fresh_as_of()
    faulty = reason in (Rebuild.BELOW_LOG_START, Rebuild.BEYOND_END)
    report = log.warning if faulty else log.info
    report(
        "partition store rebuilt",
        partition=partition,
        reason=str(reason),
        **where,
        away_s=None if fresh_as_of is None else (now_ms - fresh_as_of) / 1000,
    )


def _unfinished(
    consumer: Consumer, ends: Mapping[tuple[str, int], int], batches: Mapping[int, StoreBatch]
) -> dict[tuple[str, int], int]:
    """The ends not reached yet; a reached one becomes its store's checkpoint.

    The end, not one past the last record: transaction markers follow the last record, and
    a store checkpointed before them could never tell it holds everything up to the end
    (`mark_caught_up`) until a new record came.
    """
    left = {}
    for (topic, partition), end in ends.items():
        if _position(consumer, topic, partition) >= end:
            batches[partition].checkpoint(topic, end)
        else:
            left[(topic, partition)] = end
    return left


def _position(consumer: Consumer, topic: str, partition: int) -> int:
    """The consumer's next offset of the partition (negative: none consumed yet)."""
    [position] = consumer.position([TopicPartition(topic, partition)])
    return int(position.offset)


def mark_caught_up(
    consumer: Consumer, topic: str, stores: Mapping[int, PartitionStore], now_ms: int
) -> list[int]:
    """Make each store holding all its partition of ``topic`` holds now fresh as of
    ``now_ms``, its checkpoint at the consumer's position; return their partitions.

    The restore's rule (ends read after a time, and reached, make a store fresh as of that
    time) for a reader that keeps consuming and applies what it consumed before it asks:
    the timer service. Its records' timestamps alone left an idle one stale — a quiet day
    later its restart rebuilt every store from offset 0, firing again each timer it had
    fired whose clear had not come yet.
    """
    caught_up = []
    for partition, store in stores.items():
        # Asked once, briefly: the caller's loop waits meanwhile, and a check that cannot
        # be made now is made at the next interval (a restore stays exact either way).
        where = TopicPartition(topic, partition)
        marks = consumer.get_watermark_offsets(where, timeout=_CATCH_UP_QUERY_S)
        if marks is None:  # not answered in time
            break
        position, checkpoint = _position(consumer, topic, partition), store.checkpoint(topic)
        if max(position, checkpoint or 0) < int(marks[1]):
            continue
        batch = StoreBatch()
        if position > (checkpoint or 0):
            batch.checkpoint(topic, position)
        batch.mark_fresh(now_ms)
        store.write(batch)
        caught_up.append(partition)
    return caught_up


def _apply_all(
    consumer: Consumer, batches: Mapping[int, StoreBatch], names: TopicNames
) -> dict[tuple[str, int], tuple[int, int]]:
    """Apply what has arrived to the batches; per topic partition: (records, last offset).

    Straight from librdkafka's messages, without a `Consumed` each: at 50,000 records a
    second the per-record objects and the per-record checkpoint cost a tenth of the CPU;
    and the history keys and carried timers of the whole batch are decoded in one call
    each. A restore stops at the first error rather than skip a record.
    """
    arrived: list[tuple[Message, str, int, int]] = []
    for message in consume_available(consumer, 10_000, 0.2):
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                raise RecordsGoneError(f"restore: {error.str()}")
            raise RestoreError(f"restore: {error}")
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise RestoreError("restore: a record without a topic, partition or offset")
        arrived.append((message, topic, partition, offset))
    history = names.history
    in_history = [(m, t, p, o) for m, t, p, o in arrived if t == history]
    keys = iter(
        serde.read_history_keys(
            [m.key() or b"" for m, _, _, _ in in_history], [(t, p, o) for _, t, p, o in in_history]
        )
    )
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for message, topic, partition, offset in arrived:
        batch = batches[partition]
        if topic == history:
            workflow_id, event_id = next(keys)
            batch.put_event(workflow_id, event_id, message.value())
        else:
            _apply_timer(batch, message, topic, partition, offset)
        where = (topic, partition)
        seen[where] = (seen[where][0] + 1 if where in seen else 1, offset)
    # After the batch's timers-topic records rather than between them: Kafka orders no
    # topic's records against another's, and the two never hold the same timer.
    _apply_carried(batches, in_history)
    return seen


def _apply_carried(
    batches: Mapping[int, StoreBatch], in_history: list[tuple[Message, str, int, int]]
) -> None:
    """The timers the history records carry in their headers (`topics.carried_timers`),
    in their records' order, the whole batch's decoded together."""
    pairs: list[tuple[str, bytes]] = []
    places: list[tuple[str, int, int]] = []
    for message, topic, partition, offset in in_history:
        raw = message.headers()
        if raw:
            for pair in header_pairs(raw):
                pairs.append(pair)
                places.append((topic, partition, offset))
    try:
        changes = carried_timers.decode_changes(pairs, places)
    except DecodeError as error:
        raise RestoreError(f"{error.location}: a timer header: {error}") from error
    for (_, partition, _), change in zip(places, changes, strict=True):
        if change is not None:
            batches[partition].put_timer(*change)


def _apply_timer(
    batch: StoreBatch, message: Message, topic: str, partition: int, offset: int
) -> None:
    workflow_id, timer_id = serde.decode_timer_key(
        message.key() or b"", topic=topic, partition=partition, offset=offset
    )
    value = message.value()
    fire_at = (
        0
        if value is None
        else serde.decode_timer(value, topic=topic, partition=partition, offset=offset).fire_at_ms
    )
    batch.put_timer(workflow_id, timer_id, fire_at, value)
