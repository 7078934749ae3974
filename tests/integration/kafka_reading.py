"""Read whole topics back from the broker, as an auditor would (read_committed)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from runtime.events import HistoryEvent
from topics import serde
from topics.catalogue import TopicNames
from topics.consumed import consume_available


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
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions if ends[p] > 0]
        )
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records += [r for r in consume_available(consumer, 1000, 0.2) if not r.error()]
            positions = consumer.position(
                [TopicPartition(topic, p) for p in partitions if ends[p] > 0]
            )
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                return records
        raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
    finally:
        consumer.close()


def read_history(bootstrap: str, namespace: str) -> list[HistoryEvent]:
    return [
        serde.decode_history_event(r.value())
        for r in read_topic(bootstrap, TopicNames(namespace).history)
        if r.value() is not None
    ]
