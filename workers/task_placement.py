"""Which partition of a task queue's topic the tasks of one transaction go to.

A task may go to any partition of its queue's topic (DESIGN.md): activity workers run
tasks in any order, and no two tasks need to meet on one partition. Spread by the hash
of their keys, one transaction's tasks touched every partition of the topic, and every
partition a transaction touches costs the broker a produce request (librdkafka sends one
per partition, confluentinc/librdkafka#1700), a partition registration with the
transaction and a commit marker. So all the tasks of one transaction for one queue go to
one partition, the next transaction's to the next partition: over many transactions the
activity workers of the queue still get an even share, and a transaction writes to one
task partition instead of up to all of them.

A task's cancellation cannot follow its key to the task, then: it goes to every partition
of the queue's topic, and the worker that holds the task acts on it (the others hold no
such task). Cancellations are rare next to tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from workers.partition import Outbound


class TaskPlacement:
    """Assigns each transaction's task records one partition per task topic, in turn."""

    def __init__(self) -> None:
        #: task topic -> its partition count, as the cluster said when it was first used
        self._partitions: dict[str, int] = {}
        self._turn = -1

    def knows(self, topic: str) -> bool:
        return topic in self._partitions

    def learn(self, topic: str, partitions: int) -> None:
        """Place ``topic``'s tasks from now on; a count that grew later is only unused."""
        if partitions < 1:
            raise ValueError(f"{topic} has no partitions")
        self._partitions[topic] = partitions

    def place(self, records: Iterable[Outbound]) -> list[Outbound]:
        """``records`` of one transaction, each unplaced task on its topic's partition and
        each cancellation on all of them."""
        self._turn += 1
        return [placed for record in records for placed in self._placed(record)]

    def _placed(self, record: Outbound) -> list[Outbound]:
        count = self._partitions.get(record.topic)
        if count is None or record.partition is not None:
            return [record]
        if record.every_partition:
            return [replace(record, partition=p, every_partition=False) for p in range(count)]
        return [replace(record, partition=self._turn % count)]
