"""Moving dead letters back onto the inbox (``chronik dlq redrive``), each exactly once.

A record lands on ``<ns>.inbox.dlq`` when the workflow workers could not take it: bytes of a
schema version they did not know yet, an engine error. Once the cause is gone (the workers
upgraded, the bug fixed) its workflow should still get it, in its partition's order.

Kafka deletes no single record, so "moved" is a cursor: the consumer group
``<ns>.dlq-redrive`` holds, per dead-letter partition, the offset up to which dead letters
were moved. A run moves those past the cursor up to the ends it found when it began, and
commits the cursor's new offsets in the transaction that produces them onto the inbox: a
run that fails part-way moves nothing of its unfinished transaction, a second run never
moves a record again, and two runs at once share one transactional id, so the later
fences the earlier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from runtime.errors import RPCTimeoutError
from topics import dead_letters
from topics.catalogue import TopicNames
from topics.consumed import Consumed
from topics.partitioner import producer_config
from topics.scan import partition_count, read_to_end
from topics.transient import produce_when_room

log = structlog.get_logger(__name__)

#: Dead letters per transaction: a long backlog moves in several, each well inside
#: ``transaction.timeout.ms``, the cursor advancing with each.
TRANSACTION_RECORDS = 5_000
#: How long reading the dead letters to their end may take before the run gives up.
_READ_PATIENCE_S = 30.0


class RedriveError(RuntimeError):
    """The dead letters could not be read or moved; the cursor stays where it was."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one dead letter."""

    record: Consumed
    #: The inbox partition it was (or would be) produced to; None: it is not moved.
    destination: int | None
    #: Why it is passed over instead of moved (None: moved, or would be).
    passed_over: str | None = None


def redrive(
    kafka_config: Mapping[str, Any],
    names: TopicNames,
    *,
    dry_run: bool = False,
    limit: int | None = None,
) -> list[Outcome]:
    """Move the dead letters past the cursor (at most ``limit``) back onto the inbox.

    With ``dry_run`` nothing is produced and the cursor stays: the outcomes say what a
    run would do. A dead letter whose value was left out (too large for librdkafka to
    produce) is passed over, cursor included: it could never be produced again.
    """
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"{names.namespace}.dlq-redrive",  # the cursor; never joined
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
        }
    )
    try:
        inbox_partitions = partition_count(consumer, names.inbox, names.namespace)
        pending = _read_past_cursor(consumer, names, limit)
        outcomes = [_outcome(record, inbox_partitions) for record in pending]
        if not dry_run and outcomes:
            _move(kafka_config, names, consumer, outcomes)
        return outcomes
    finally:
        consumer.close()


def _read_past_cursor(consumer: Consumer, names: TopicNames, limit: int | None) -> list[Consumed]:
    """The dead letters from the cursor to the ends as they are now, partition by
    partition in offset order, the first ``limit`` of them.

    A cursor below the log start (the topic's retention removed dead letters nobody
    moved) starts at the log start: what is gone cannot be moved.
    """
    topic = names.inbox_dlq
    partitions = range(partition_count(consumer, topic, names.namespace))
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    cursor = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    by_partition: dict[int, list[Consumed]] = {}

    def keep(messages: list[Message]) -> None:
        for message in messages:
            record = Consumed.of(message)
            by_partition.setdefault(record.partition, []).append(record)

    try:
        read_to_end(consumer, topic, partitions, keep, _READ_PATIENCE_S, starts=cursor)
    except RPCTimeoutError as error:
        raise RedriveError(str(error)) from error
    ordered = [record for p in sorted(by_partition) for record in by_partition[p]]
    return ordered if limit is None else ordered[:limit]


def _outcome(record: Consumed, inbox_partitions: int) -> Outcome:
    headers = dict(record.headers)
    if dead_letters.TRUNCATED in headers:
        where = dead_letters.source(headers)
        return Outcome(
            record,
            None,
            f"its value was left out (too large to produce again); the original is at {where}",
        )
    source = headers.get(dead_letters.PARTITION, b"")
    partition = int(source) if source.isdigit() else -1
    if not 0 <= partition < inbox_partitions:
        return Outcome(record, None, f"no inbox partition in its headers ({source!r})")
    return Outcome(record, partition)


def _move(
    kafka_config: Mapping[str, Any],
    names: TopicNames,
    consumer: Consumer,
    outcomes: list[Outcome],
) -> None:
    producer = Producer(
        {**producer_config(kafka_config), "transactional.id": f"{names.namespace}.dlq-redrive"}
    )
    try:
        producer.init_transactions(30)
        for start in range(0, len(outcomes), TRANSACTION_RECORDS):
            _move_one_transaction(
                producer, consumer, names, outcomes[start : start + TRANSACTION_RECORDS]
            )
    except Exception as error:
        _abort(producer)
        raise RedriveError(f"moving dead letters: {error}") from error
    finally:
        producer.flush(10)


def _abort(producer: Producer) -> None:
    """End a failed transaction now: left open, it would hold every read_committed reader
    of the inbox partitions it wrote to — the workflow workers — at its first record until
    ``transaction.timeout.ms``."""
    try:
        producer.abort_transaction(10)
    except KafkaException as error:  # none open (the failure came before), or unusable
        log.info("no transaction to abort", error=str(error))


def _move_one_transaction(
    producer: Producer, consumer: Consumer, names: TopicNames, outcomes: list[Outcome]
) -> None:
    producer.begin_transaction()
    cursor: dict[int, int] = {}
    for outcome in outcomes:
        record = outcome.record
        cursor[record.partition] = record.offset + 1
        if outcome.destination is None:
            continue
        produce_when_room(
            producer,
            names.inbox,
            key=record.key,
            value=record.value,
            partition=outcome.destination,
            headers=[(dead_letters.REDRIVEN_FROM, record.location.encode())],
        )
    producer.send_offsets_to_transaction(
        [TopicPartition(names.inbox_dlq, p, offset) for p, offset in cursor.items()],
        consumer.consumer_group_metadata(),
    )
    producer.commit_transaction(60)
