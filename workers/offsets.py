"""Which offset of a partition is safe to commit while tasks finish out of order.

Activities run concurrently, so task 7 may finish before task 5. Committing 8 then would
lose task 5 in a crash; the safe commit point is the lowest offset still running (or one past
the highest seen when none is).
"""

from __future__ import annotations

import heapq


class PartitionProgress:
    """Offsets handed out and finished for one partition; not thread-safe by design."""

    def __init__(self) -> None:
        self._running: list[int] = []
        self._finished: set[int] = set()
        self._next = -1
        self._committed = -1

    def started(self, offset: int) -> None:
        heapq.heappush(self._running, offset)
        self._next = max(self._next, offset + 1)

    def finished(self, offset: int) -> None:
        self._finished.add(offset)

    @property
    def in_flight(self) -> int:
        return len(self._running) - len(self._finished)

    def commit_failed(self, offset: int) -> None:
        """Kafka refused the commit of ``offset``: the next `commit_point` offers it again
        (unless a later point was handed out meanwhile, which covers it)."""
        if self._committed == offset:
            self._committed = -1

    def commit_point(self) -> int | None:
        """The offset to commit now, or None when it has not moved since the last call."""
        while self._running and self._running[0] in self._finished:
            self._finished.discard(heapq.heappop(self._running))
        point = self._running[0] if self._running else self._next
        if point < 0 or point == self._committed:
            return None
        self._committed = point
        return point
