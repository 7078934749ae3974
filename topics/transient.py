"""Retry the Kafka calls that fail for a moment and then go through.

Right after a topic is created, or while a partition's leadership moves, brokers answer
"not leader" or "unknown partition" for a few hundred milliseconds; while a group's
coordinator moves, loads or stalls, group requests are answered "not coordinator" or
"coordinator loading", or find no coordinator at all. Those answers are normal; an error
that persists past the deadline is not, and is raised as it is. And a producer whose
local queue is full refuses a record until deliveries make room.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

T = TypeVar("T")

_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
    }
)


def retry_transient(call: Callable[[], T], timeout_s: float = 30.0) -> T:
    """``call()``, again after a short pause while it fails transiently, until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        try:
            return call()
        except KafkaException as exception:
            if not is_transient(exception.args[0]) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def is_transient(error: KafkaError) -> bool:
    """Whether ``error`` is one that goes away by itself: asking again is the answer."""
    return bool(error.retriable()) or error.code() in _TRANSIENT


def is_fatal(error: KafkaError) -> bool:
    """Whether the client that reported ``error`` is unusable. librdkafka says so to a
    consumer's records, to ``produce`` and to delivery reports with the code ``_FATAL``,
    and `KafkaError.fatal()` of that object is False (the flag belongs to the client's
    own fatal error): checking only the flag kept fenced consumers and unusable
    producers running."""
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


def watermarks(consumer: Consumer, where: TopicPartition) -> tuple[int, int]:
    """The (low, high) watermarks of ``where``, asked again while the broker answers with
    a passing error (a partition just created, a leader moving)."""
    low, high = retry_transient(lambda: consumer.get_watermark_offsets(where, timeout=5))
    return int(low), int(high)


def produce_when_room(producer: Producer, topic: str, **kwargs: Any) -> None:
    """``producer.produce(topic, **kwargs)``, waiting while its local queue is full.

    librdkafka raises `BufferError` when the queue holds ``queue.buffering.max.messages``;
    serving delivery reports (`poll`) is what empties it.
    """
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)
