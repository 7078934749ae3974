"""Read partitions of a topic from their start to their end as it was when the read began.

The readers that need a whole compacted topic at one moment (the status list, replay's
histories read without a worker) share one difficulty: a ``read_committed`` consumer never
receives the transaction markers, so the offset of the last record it gets is short of the
high watermark whenever a transaction ends a partition. Only the consumer's *position*
tells that a partition is read; comparing record offsets to the watermark would wait
forever. Records past the end taken at the start are left out, so the read is of one
moment however busy the topic is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from confluent_kafka import Consumer, Message, TopicPartition

from runtime.errors import RPCTimeoutError
from topics.consumed import consume_available
from topics.errors import TopicsMissingError
from topics.transient import watermarks

#: Receives each batch of records read, in partition order within a partition.
Apply = Callable[[list[Message]], None]


def partition_count(consumer: Consumer, topic: str, namespace: str) -> int:
    """How many partitions ``topic`` has; `TopicsMissingError` (one line) when it is not
    there, which a typo in the namespace looks like."""
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise TopicsMissingError(namespace, [topic])
    return len(metadata.partitions)


def read_to_end(
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    apply: Apply,
    timeout_s: float,
    *,
    starts: Mapping[int, int] | None = None,
) -> None:
    """Hand ``apply`` every committed record of ``partitions`` below their current high
    watermarks, from their start (or the offsets ``starts`` names; below the log start:
    from there), assigned without joining a group; `RPCTimeoutError` if that takes longer
    than ``timeout_s`` (a transaction left open holds ``read_committed`` readers back until
    its coordinator aborts it)."""
    marks = {p: watermarks(consumer, TopicPartition(topic, p)) for p in sorted(set(partitions))}
    first = {p: max((starts or {}).get(p, low), low) for p, (low, _) in marks.items()}
    ends = {p: high for p, (_, high) in marks.items() if first[p] < high}
    consumer.assign([TopicPartition(topic, p, first[p]) for p in ends])
    deadline = time.monotonic() + timeout_s
    while ends:
        if time.monotonic() > deadline:
            raise RPCTimeoutError(
                f"{topic} partitions {sorted(ends)} were not read to their end within "
                f"{timeout_s}s (a transaction left open holds read_committed readers back)"
            )
        records = [
            m
            for m in consume_available(consumer, 10_000, 0.2)
            if m.error() is None and (m.offset() or 0) < ends.get(m.partition() or 0, 0)
        ]
        if records:
            apply(records)
        positions = consumer.position([TopicPartition(topic, p) for p in ends])
        ends = {p.partition: ends[p.partition] for p in positions if p.offset < ends[p.partition]}
