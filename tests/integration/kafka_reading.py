"""Read whole topics back from the broker, as an auditor would (read_committed)."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, Message

from runtime.events import HistoryEvent
from topics import serde
from topics.catalogue import TopicNames
from topics.scan import read_to_end


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of ``topic`` up to its current end, in partition order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"audit-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        by_partition: dict[int, list[Any]] = {}

        def keep(records: list[Message]) -> None:
            for record in records:
                by_partition.setdefault(record.partition() or 0, []).append(record)

        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        read_to_end(consumer, topic, partitions, keep, timeout_s)
        return [record for p in sorted(by_partition) for record in by_partition[p]]
    finally:
        consumer.close()


def read_history(bootstrap: str, namespace: str) -> list[HistoryEvent]:
    return [
        serde.decode_history_event(r.value())
        for r in read_topic(bootstrap, TopicNames(namespace).history)
        if r.value() is not None
    ]
