"""Partitions a group gives a worker are assigned at offsets looked up here, never by librdkafka.

Given partitions without offsets, librdkafka asks the group coordinator for their
committed offsets itself, and starts fetching once the answer came. When that request is
answered ``NOT_COORDINATOR`` for the whole request — the coordinator moved, or a stalled
broker answered late — librdkafka neither retries nor gives up: the partitions stay
assigned and are never fetched, while the process looks healthy to every supervisor
(confluentinc/librdkafka#5586; seen here when a worker joined while its broker stalled).
`rd_kafka_committed` does not share that path, so every worker looks the offsets up with
it, asks again while the coordinator is passing, and assigns explicit offsets, which
librdkafka fetches from without a lookup of its own.
"""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from topics.transient import retry_transient
from workers.membership import TRANSACTION_TIMEOUT_MS

#: How long a worker asks for its partitions' committed offsets. They are unstable (the
#: broker makes the call wait) while a dead owner's transaction is open, until the
#: coordinator aborts it after `TRANSACTION_TIMEOUT_MS`; a broker that stays away longer
#: fails the call, and the worker stops with the error rather than own partitions it
#: never reads.
LOOKUP_PATIENCE_S = 120.0


class CommittedOffsetsError(RuntimeError):
    """The committed offsets of a worker's partitions could not be read: the worker stops
    (a supervisor restarts it) rather than own partitions it cannot read from the right
    place."""


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], patience_s: float = LOOKUP_PATIENCE_S
) -> list[TopicPartition]:
    """The group's committed offset of each of ``partitions`` (negative: none committed),
    asked again while the coordinator answers with a passing error; any other error, or
    one that lasts past ``patience_s``, raises `CommittedOffsetsError`."""
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not wanted:
        return []
    try:
        return retry_transient(lambda: _committed(consumer, wanted), timeout_s=patience_s)
    except KafkaException as exception:
        where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in wanted)
        raise CommittedOffsetsError(
            f"cannot read the committed offsets of {where}: {exception.args[0]}"
        ) from exception


def assign_at_committed(consumer: Consumer, assigned: list[TopicPartition]) -> list[TopicPartition]:
    """Add ``assigned`` to the consumer's assignment at their committed offsets, or at
    their start when nothing was committed (the group's ``auto.offset.reset=earliest``);
    the committed offsets looked up (negative: none), for whoever needs them next.

    For an ``on_assign`` callback of a cooperative group: having assigned, the callback
    keeps librdkafka from assigning them again without offsets.
    """
    committed = committed_offsets(consumer, assigned)
    at = [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
        for tp in committed
    ]
    consumer.incremental_assign(at)
    return committed


def _committed(consumer: Consumer, wanted: list[TopicPartition]) -> list[TopicPartition]:
    """One lookup; a partition's own error is raised.

    Taken for "nothing committed" (its offset is -1001 then), such an error would start
    the partition from its beginning, and a commit would then write that back as the
    group's position.
    """
    committed = consumer.committed(wanted, timeout=TRANSACTION_TIMEOUT_MS / 1000 + 5)
    for tp in committed:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return list(committed)
