"""The offsets an owner's transactions commit for the partitions it owns, to be fenced.

A transaction that carries a consumer group's offsets (``send_offsets_to_transaction``
with the consumer's group metadata) is refused once the group gave those partitions to
someone else: that is what stops a zombie — an owner dropped from its group that has not
noticed yet, say while it restored — from writing alongside the new owner. librdkafka
knows no position of a partition nothing was consumed from since it was assigned, and
sends no offsets at all for a transaction with none, so a transaction that only fired
timers of such partitions fenced nothing. Each owned partition therefore commits the
offset it started from again until it has a position of its own, which checks the group
generation all the same.

The workflow worker (inbox offsets) and the standalone timer service (positions on the
timers topic) keep their fence offsets here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, TopicPartition

from workers.assignment import committed_offsets


class FenceOffsets:
    """The offset each owned partition of ``topic`` commits with the next transaction."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self._consumer = consumer
        self.topic = topic
        #: partition -> offset to commit when nothing was consumed from it
        self.offsets: dict[int, int] = {}

    def learn(self, numbers: Iterable[int]) -> None:
        """Where each newly owned partition starts: its committed offset, else its start."""
        wanted = [TopicPartition(self.topic, n) for n in numbers]
        if not wanted:
            return
        for tp in committed_offsets(self._consumer, wanted):
            offset = tp.offset
            if offset < 0:
                low, _ = self._consumer.get_watermark_offsets(tp, timeout=10)
                offset = low
            self.offsets[tp.partition] = offset

    def move(self, number: int, offset: int) -> None:
        """``number`` now starts at ``offset`` (a rewind to the committed offsets)."""
        if offset >= 0:
            self.offsets[number] = offset

    def forget(self, number: int) -> None:
        """The partition is no longer owned."""
        self.offsets.pop(number, None)

    def positions(
        self, owned: Iterable[int], consumed: Mapping[int, int] | None = None
    ) -> list[TopicPartition]:
        """Every owned partition's offset for the transaction, in partition order.

        The consumer's position where it has one, ``consumed`` (partition -> next offset)
        over it, else the offset the partition started from (`learn`).
        """
        numbers = set(owned)
        wanted = [TopicPartition(self.topic, n) for n in sorted(numbers)]
        at = {tp.partition: tp.offset for tp in self._consumer.position(wanted)}
        at.update(consumed or {})
        for number, offset in at.items():
            self.move(number, offset)
        return [
            TopicPartition(self.topic, number, offset)
            for number, offset in sorted(self.offsets.items())
            if number in numbers
        ]
