"""The namespace's workflows as the compacted ``<ns>.status`` topic holds them.

Every partition owner writes a workflow's latest status to ``<ns>.status``, keyed by the
workflow id, in the transaction of the step that changed it; compaction keeps the last record
per id, and retention's tombstones remove it. Reading the topic from its start to its high
watermark, the last record of each key winning (compaction may not have run yet), is thus the
list of every workflow the namespace retains, as of the read — with no index to keep and
nothing to ask the workers, which may be down.

It is a scan: its cost grows with the workflows retained (about 100 bytes each). For a
namespace of millions, follow the topic into a store that indexes it (any Kafka Connect sink
reads a compacted topic); this is what the CLI and programs use below that.
"""

from __future__ import annotations

from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message

from runtime.errors import RPCError
from runtime.messages import StatusRecord
from topics import serde
from topics.catalogue import TopicNames
from topics.consumed import Consumed
from topics.errors import DecodeError
from topics.scan import partition_count, read_to_end

log = structlog.get_logger(__name__)


def read_statuses(
    kafka_config: dict[str, Any], names: TopicNames, *, timeout_s: float = 60.0
) -> list[StatusRecord]:
    """The latest status of every workflow id in ``<ns>.status``.

    Reads ``read_committed``: only statuses of committed steps, the ones the owners act on.
    A record that does not decode (written by a newer schema, or by a foreign producer) is
    left out with a warning naming where it is, rather than failing the whole list.
    """
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"{names.namespace}.visibility",  # required by the client, never joined
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        latest = _read_to_end(consumer, names.status, names.namespace, timeout_s)
    except KafkaException as error:
        raise RPCError(f"reading {names.status} failed: {error}") from error
    finally:
        consumer.close()
    return list(latest.values())


def _read_to_end(
    consumer: Consumer, topic: str, namespace: str, timeout_s: float
) -> dict[str, StatusRecord]:
    latest: dict[str, StatusRecord] = {}

    def apply(records: list[Message]) -> None:
        for message in records:
            _apply(latest, Consumed.of(message))

    partitions = range(partition_count(consumer, topic, namespace))
    read_to_end(consumer, topic, partitions, apply, timeout_s)
    return latest


def _apply(latest: dict[str, StatusRecord], record: Consumed) -> None:
    if record.key is None:
        log.warning("status record without a key left out", location=record.location)
        return
    workflow_id = record.key.decode("utf-8", errors="replace")
    if record.value is None:  # retention ended: the workflow is gone
        latest.pop(workflow_id, None)
        return
    try:
        latest[workflow_id] = record.decode(serde.decode_status)
    except DecodeError as error:
        log.warning(
            "undecodable status record left out", location=record.location, error=str(error)
        )
