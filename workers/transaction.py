"""The workflow worker's transactions, each committed on a thread while the next batch runs.

A transaction's commit is mostly waiting: for the broker to take the records, for the
coordinator to write the markers. Waiting on the loop's thread left the engine idle for a
third of the time under load, so a transaction is begun, filled and committed here, on a
thread of its own, while the loop processes the next batch. Only one is under way at a
time: a Kafka producer has one open transaction, and the next batch's transaction begins
once this one is settled (`wait`).

Nothing of the next batch reaches Kafka before this transaction committed, so a failed
commit loses nothing: the loop rewinds to the committed offsets and processes both batches
again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from topics.transient import produce_when_room
from workers.partition import Outbound

#: (topic, partition) -> the highest offset Kafka gave a record of the transaction there
LastOffsets = dict[tuple[str, int], int]


class Settled(NamedTuple):
    """The last transaction `wait` saw commit: its records, and seconds from its start."""

    records: int
    seconds: float


class BackgroundTransactions:
    """Runs one transaction at a time of a transactional producer on a thread of its own."""

    def __init__(self, producer: Producer, tracked_topics: frozenset[str]) -> None:
        self._producer = producer
        #: Topics whose last offset per partition the caller needs (its store checkpoints).
        self._tracked = tracked_topics
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chronik-commit")
        self._under_way: Future[LastOffsets] | None = None
        #: The one under way: when it was started (monotonic) and its record count.
        self._started = (0.0, 0)
        self.last_settled = Settled(0, 0.0)

    @property
    def under_way(self) -> bool:
        return self._under_way is not None

    @property
    def committing(self) -> bool:
        """Whether the transaction under way is still being committed (`wait` would block)."""
        return self._under_way is not None and not self._under_way.done()

    def start(
        self,
        records: Sequence[Outbound],
        inbox_offsets: list[TopicPartition],
        group_metadata: Any,
    ) -> None:
        """Begin, fill and commit a transaction with ``records`` and the inbox offsets.

        ``inbox_offsets`` and ``group_metadata`` are taken on the caller's thread, before it
        consumes the next batch: they must be exactly this transaction's positions.
        """
        if self._under_way is not None:
            raise RuntimeError("a transaction is under way: wait() for it first")
        self._started = (time.monotonic(), len(records))
        self._under_way = self._thread.submit(
            self._transact, records, inbox_offsets, group_metadata
        )

    def wait(self) -> LastOffsets:
        """Block until the transaction under way committed; raise its `KafkaException`."""
        under_way, self._under_way = self._under_way, None
        if under_way is None:
            return {}
        last_offsets = under_way.result()
        began, records = self._started
        self.last_settled = Settled(records, time.monotonic() - began)
        return last_offsets

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def _transact(
        self, records: Sequence[Outbound], inbox_offsets: list[TopicPartition], group_metadata: Any
    ) -> LastOffsets:
        last_offsets: LastOffsets = {}

        def delivered(error: KafkaError | None, message: Message) -> None:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if error is None and topic is not None and partition is not None and offset is not None:
                key = (topic, partition)
                last_offsets[key] = max(offset, last_offsets.get(key, -1))

        # Offsets grow in produce order within a partition (the producer is idempotent), so
        # only the last record of each tracked partition needs a delivery report.
        last_of = {
            (record.topic, record.partition): index
            for index, record in enumerate(records)
            if record.topic in self._tracked and record.partition is not None
        }
        reported = set(last_of.values())
        producer = self._producer
        producer.begin_transaction()
        for index, record in enumerate(records):
            self._produce(record, delivered if index in reported else None)
        producer.send_offsets_to_transaction(inbox_offsets, group_metadata)
        self._commit()
        return last_offsets

    def _commit(self, attempts: int = 3) -> None:
        """librdkafka lets a commit that failed with a retriable error be asked again."""
        for attempt in range(1, attempts + 1):
            try:
                self._producer.commit_transaction()
                return
            except KafkaException as exception:
                if attempt == attempts or not exception.args[0].retriable():
                    raise

    def _produce(self, record: Outbound, on_delivery: Any) -> None:
        kwargs: dict[str, Any] = {"key": record.key, "value": record.value}
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        if record.partition is not None:
            kwargs["partition"] = record.partition
        if record.headers:
            kwargs["headers"] = list(record.headers)
        produce_when_room(self._producer, record.topic, **kwargs)
