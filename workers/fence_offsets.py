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
        #: partition -> the committed offset its assignment looked up (negative: none),
        #: until `learn` takes it
        self._assigned_at: dict[int, int] = {}

    def assigned(self, committed: Iterable[TopicPartition]) -> None:
        """The committed offsets the assignment looked up (`assign_at_committed`): `learn`
        starts from them instead of asking the coordinator a second time."""
        self._assigned_at.update((tp.partition, tp.offset) for tp in committed)

    def learn(self, numbers: Iterable[int]) -> None:
        """Where each newly owned partition starts: its committed offset, else its start.

        The offsets its assignment looked up, where there are; the others are looked up.
        """
        owned = list(numbers)
        committed = {n: self._assigned_at.pop(n) for n in owned if n in self._assigned_at}
        unknown = [TopicPartition(self.topic, n) for n in owned if n not in committed]
        committed.update(
            (tp.partition, tp.offset) for tp in committed_offsets(self._consumer, unknown)
        )
        for number, offset in committed.items():
            if offset >= 0:
                self.offsets[number] = offset
            else:  # nothing committed: the partition's start
                where = TopicPartition(self.topic, number)
                self.offsets[number], _ = self._consumer.get_watermark_offsets(where, timeout=10)

    def move(self, number: int, offset: int) -> None:
        """``number`` now starts at ``offset`` (a rewind to the committed offsets)."""
        if offset >= 0:
            self.offsets[number] = offset

    def forget(self, number: int) -> None:
        """The partition is no longer owned (or was given and taken back before `learn`)."""
        self.offsets.pop(number, None)
        self._assigned_at.pop(number, None)

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
