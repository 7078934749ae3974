"""Which partition a workflow id belongs to, computed exactly as Java's Kafka producer does.

Partition *p* of inbox, history, timers and status belongs to one owner, so every writer
of those topics must agree on ``partition(workflow_id)``: Java's default partitioner,
``toPositive(murmur2(utf8(key))) % N``. librdkafka (and so confluent-kafka) defaults to
CRC32 instead; :func:`producer_config` sets ``partitioner=murmur2_random``, which is the
same murmur2 for keyed records. History records are keyed ``{workflow_id, event_id}``,
so their writer sets the partition explicitly with :func:`partition_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from topics.errors import KafkaConfigError

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF

#: librdkafka's name for Java's keyed partitioning (random partition for a null key).
PARTITIONER = "murmur2_random"


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: 32-bit MurmurHash2, seed 0x9747b28c, as a signed int.

    Java computes in wrapping 32-bit ints; here every product is masked to 32 bits and the
    result is converted to a signed value at the end, so equal inputs give Java's number.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not ``abs``, which differs)."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a Java producer (or librdkafka with murmur2_random) picks for ``key``."""
    if partitions <= 0:
        raise ValueError("a topic has at least one partition")
    return to_positive(murmur2(key)) % partitions


def partition_for(workflow_id: str, partitions: int) -> int:
    """The partition of a workflow id in inbox, history, timers and status."""
    return partition_for_key(workflow_id.encode("utf-8"), partitions)


def producer_config(base: Mapping[str, Any]) -> dict[str, Any]:
    """The librdkafka settings every Chronik producer starts from: ``base`` plus ours.

    ``base`` is the client configuration (``bootstrap.servers``, SASL/SSL...). Adds the
    Java-compatible partitioner and idempotence (no duplicates or reordering from internal
    retries); callers add ``transactional.id``, ``linger.ms`` and the like on top. A
    different partitioner in ``base`` is refused: it would put workflows on partitions
    their owner does not own.
    """
    partitioner = base.get("partitioner", PARTITIONER)
    if partitioner != PARTITIONER:
        raise KafkaConfigError(
            f"Chronik producers must use partitioner={PARTITIONER}, not {partitioner}"
        )
    return {**base, "partitioner": PARTITIONER, "enable.idempotence": True}
