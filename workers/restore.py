"""Bring partition stores up to date with ``history[p]`` and ``timers[p]``.

The store says where it stopped (its checkpoints); restore reads each topic partition from
there with ``read_committed`` until the consumer position reaches the high watermark —
never "until the record at high - 1", which a transaction marker may occupy. A store that
never saw a topic starts at offset 0, so deleting a state directory loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from runtime.store import PartitionStore, StoreBatch
from topics import carried_timers, serde
from topics.catalogue import TopicNames
from topics.consumed import consume_available, header_pairs
from topics.errors import DecodeError
from topics.transient import retry_transient

log = structlog.get_logger(__name__)

_WRITE_EVERY = 5_000


@dataclass(frozen=True, slots=True)
class RestoreStats:
    partition: int
    history_records: int
    timer_records: int
    seconds: float


class RestoreError(RuntimeError):
    """A partition could not be restored; the worker must not process it."""


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
    """
    started = time.monotonic()
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"{names.namespace}.restore",  # required by the client, never used
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    wanted = topics if topics is not None else (names.history, names.timers)
    counts = {(topic, p): 0 for topic in wanted for p in stores}
    seconds: dict[int, float] = {}
    try:
        ends = _assign(consumer, stores, wanted)
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
                    stores[p].write(batch)
                    batches[p] = StoreBatch()
            ends = {where: end for where, end in ends.items() if not _reached(consumer, where, end)}
            _time_finished(seconds, stores, ends, started)
        for p, batch in batches.items():
            if batch:
                stores[p].write(batch)
    except KafkaException as error:
        raise RestoreError(f"partitions {sorted(stores)}: {error}") from error
    finally:
        consumer.close()
    out = []
    for p in stores:
        stats = RestoreStats(
            p, counts.get((names.history, p), 0), counts.get((names.timers, p), 0), seconds[p]
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


def _assign(
    consumer: Consumer, stores: Mapping[int, PartitionStore], topics: tuple[str, ...]
) -> dict[tuple[str, int], int]:
    """Assign each store's topic partitions at its checkpoints; return the ends to reach."""
    assignment, ends = [], {}
    for partition, store in stores.items():
        for topic in topics:
            start = store.checkpoint(topic)
            low, high = _watermarks(consumer, TopicPartition(topic, partition))
            first = max(start if start is not None else low, low)
            if first < high:
                ends[(topic, partition)] = high
                offset = OFFSET_BEGINNING if start is None else first
                assignment.append(TopicPartition(topic, partition, offset))
    if assignment:
        consumer.assign(assignment)
    return ends


def _watermarks(consumer: Consumer, where: TopicPartition) -> tuple[int, int]:
    low, high = retry_transient(lambda: consumer.get_watermark_offsets(where, timeout=5))
    return int(low), int(high)


def _reached(consumer: Consumer, where: tuple[str, int], end: int) -> bool:
    [position] = consumer.position([TopicPartition(*where)])
    return bool(position.offset >= end)


def _apply_all(
    consumer: Consumer, batches: Mapping[int, StoreBatch], names: TopicNames
) -> dict[tuple[str, int], tuple[int, int]]:
    """Apply what has arrived to the batches; per topic partition: (records, last offset).

    Straight from librdkafka's messages, without a `Consumed` each: at 50,000 records a
    second the per-record objects and the per-record checkpoint cost a tenth of the CPU;
    and the history keys of the whole batch are decoded in one call. A restore stops at
    the first error rather than skip a record.
    """
    arrived: list[tuple[Message, str, int, int]] = []
    for message in consume_available(consumer, 10_000, 0.2):
        if message.error() is not None:
            raise RestoreError(f"restore: {message.error()}")
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
            raw_headers = message.headers()
            if raw_headers:
                _apply_carried(batch, raw_headers, topic, partition, offset)
        else:
            _apply_timer(batch, message, topic, partition, offset)
        where = (topic, partition)
        seen[where] = (seen[where][0] + 1 if where in seen else 1, offset)
    return seen


def _apply_carried(
    batch: StoreBatch, raw_headers: Any, topic: str, partition: int, offset: int
) -> None:
    """The timers a history record carries in its headers (`topics.carried_timers`)."""
    try:
        changes = carried_timers.changes(header_pairs(raw_headers))
    except DecodeError as error:
        raise RestoreError(f"{topic}[{partition}]@{offset}: a timer header: {error}") from error
    for change in changes:
        batch.put_timer(*change)


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
