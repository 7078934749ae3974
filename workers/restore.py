"""Bring a partition store up to date with ``history[p]`` and ``timers[p]``.

The store says where it stopped (its checkpoints); restore reads each topic partition from
there with ``read_committed`` until the consumer position reaches the high watermark —
never "until the record at high - 1", which a transaction marker may occupy. A store that
never saw a topic starts at offset 0, so deleting a state directory loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from runtime.store import PartitionStore, StoreBatch
from topics import serde
from topics.catalogue import TopicNames
from topics.consumed import Consumed, consume_available
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


def restore_partition(
    kafka_config: dict[str, Any],
    names: TopicNames,
    store: PartitionStore,
    partition: int,
    *,
    topics: tuple[str, ...] | None = None,
    timeout_s: float = 300.0,
) -> RestoreStats:
    """Catch ``store`` up with ``topics`` (default: history and timers) of ``partition``."""
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
    counts = {names.history: 0, names.timers: 0}
    try:
        wanted = topics if topics is not None else (names.history, names.timers)
        pending = _assign(consumer, store, wanted, partition)
        batch = StoreBatch()
        deadline = started + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise RestoreError(f"partition {partition}: restore did not finish in {timeout_s}s")
            for record in _records(consumer, partition):
                _apply(batch, names, record)
                counts[record.topic] += 1
            if len(batch.events) + len(batch.timers) >= _WRITE_EVERY:
                store.write(batch)
                batch = StoreBatch()
            pending = {
                topic: end
                for topic, end in pending.items()
                if not _reached(consumer, topic, partition, end)
            }
        store.write(batch)
    except KafkaException as error:
        raise RestoreError(f"partition {partition}: {error}") from error
    finally:
        consumer.close()
    stats = RestoreStats(
        partition, counts[names.history], counts[names.timers], time.monotonic() - started
    )
    log.info("partition restored", **asdict(stats))
    return stats


def _assign(
    consumer: Consumer, store: PartitionStore, topics: tuple[str, ...], partition: int
) -> dict[str, int]:
    """Assign the topics' partitions at the store's checkpoints; return the ends to reach."""
    assignment, pending = [], {}
    for topic in topics:
        start = store.checkpoint(topic)
        low, high = _watermarks(consumer, TopicPartition(topic, partition))
        first = max(start if start is not None else low, low)
        if first < high:
            pending[topic] = high
            offset = OFFSET_BEGINNING if start is None else first
            assignment.append(TopicPartition(topic, partition, offset))
    if assignment:
        consumer.assign(assignment)
    return pending


def _watermarks(consumer: Consumer, where: TopicPartition) -> tuple[int, int]:
    low, high = retry_transient(lambda: consumer.get_watermark_offsets(where, timeout=5))
    return int(low), int(high)


def _reached(consumer: Consumer, topic: str, partition: int, end: int) -> bool:
    [position] = consumer.position([TopicPartition(topic, partition)])
    return bool(position.offset >= end)


def _records(consumer: Consumer, partition: int) -> list[Consumed]:
    """What has arrived; a restore stops at the first error rather than skip a record."""
    records = []
    for message in consume_available(consumer, 10_000, 0.2):
        if message.error() is not None:
            raise RestoreError(f"partition {partition}: {message.error()}")
        records.append(Consumed.of(message))
    return records


def _apply(batch: StoreBatch, names: TopicNames, record: Consumed) -> None:
    if record.topic == names.history:
        workflow_id, event_id = record.decode_key(serde.decode_history_key)
        batch.put_event(workflow_id, event_id, record.value)
    else:
        workflow_id, timer_id = record.decode_key(serde.decode_timer_key)
        fire_at = 0 if record.value is None else record.decode(serde.decode_timer).fire_at_ms
        batch.put_timer(workflow_id, timer_id, fire_at, record.value)
    batch.checkpoint(record.topic, record.offset + 1)
