"""One owned partition: its store, its cached workflows, and what processing them produces.

This is the partition processor without Kafka: it turns decoded inbox messages and due
timers into `Transition`s through the engine, and accumulates what must be written — the
outbound records of the next transaction and the store changes to apply once that
transaction committed. The worker loop (`workers.workflow_worker`) owns the consumer and
the producer and decides when to commit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import structlog

from runtime.engine import Transition, WorkflowInstance, WorkflowRegistry
from runtime.events import HistoryEvent, WorkflowContinuedAsNew
from runtime.messages import InboxMessage, TimerFiredReport
from runtime.store import PartitionStore, StoreBatch
from topics import serde
from topics.catalogue import TopicNames

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A record for the next transaction. ``partition=None``: the murmur2 partitioner picks."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class PendingWrites:
    """What one transaction will write, and the store changes that follow its commit.

    The store changes are staged as the records are; what only the commit can tell —
    the offsets of this partition's history and timer records, the store's checkpoints —
    is added by `OwnedPartition.apply_committed`. Until then the staged history and timers
    are also indexed here, so that the partition reads its own writes (see `_history`).
    """

    records: list[Outbound] = field(default_factory=list)
    store: StoreBatch = field(default_factory=StoreBatch)
    #: workflow id -> event id -> record (None: tombstone) of this transaction's history
    events: dict[str, dict[int, bytes | None]] = field(default_factory=dict)
    #: (workflow id, timer id) of every timer this transaction sets, fires or cancels
    timers: set[tuple[str, str]] = field(default_factory=set)

    def add(self, record: Outbound) -> None:
        self.records.append(record)


class OwnedPartition:
    """The workflows of inbox partition ``number`` while this worker owns it."""

    def __init__(
        self,
        number: int,
        store: PartitionStore,
        registry: WorkflowRegistry,
        names: TopicNames,
        *,
        cache_size: int = 10_000,
    ) -> None:
        self.number = number
        self.store = store
        self._registry = registry
        self._names = names
        self._cache: OrderedDict[str, WorkflowInstance] = OrderedDict()
        self._cache_size = cache_size
        self.pending = PendingWrites()
        #: Taken by a transaction that has not been applied to the store yet: the worker
        #: processes the next batch while the previous one commits.
        self._committing: PendingWrites | None = None
        self._gc_resume: str | None = None

    # --- processing --------------------------------------------------------------

    def handle(self, message: InboxMessage, now_ms: int) -> None:
        instance = self._instance(message.workflow_id)
        self._record(instance, instance.handle(message, now_ms))

    def fire_due_timers(self, now_ms: int, limit: int = 1000) -> int:
        """Deliver every due timer to its workflow and tombstone it, in the pending writes."""
        fired = 0
        for timer in self.store.due_timers(now_ms, limit):
            if any((timer.workflow_id, timer.timer_id) in w.timers for w in self._unapplied()):
                continue  # fired, cancelled or moved by a transaction the store lacks yet
            record = serde.decode_timer(timer.record)
            self._put_timer(timer.workflow_id, timer.timer_id, timer.fire_at_ms, None)
            report = TimerFiredReport(record.workflow_id, record.run_id, record.timer_id, now_ms)
            self.handle(report, now_ms)
            fired += 1
        return fired

    def next_fire_at(self) -> int | None:
        return self.store.next_fire_at()

    def collect_garbage(self, now_ms: int, retention_ms: int, limit: int = 500) -> int:
        """Tombstone history and status of workflows closed for longer than the retention.

        Sweeps at most ``limit`` workflow ids per call, resuming where the last call
        stopped. A workflow with history in a transaction not applied yet waits for the next sweep.
        Returns how many workflows were collected.
        """
        collected, scanned, last = 0, 0, None
        for workflow_id, last_record in self.store.workflow_ids(after=self._gc_resume):
            if scanned == limit:
                break
            scanned, last = scanned + 1, workflow_id
            event = serde.decode_history_event(last_record)
            expired = event.timestamp_ms + retention_ms <= now_ms
            if (
                not _closed_for_good(event)
                or not expired
                or any(workflow_id in w.events for w in self._unapplied())
            ):
                continue
            cached = self._cache.get(workflow_id)
            if cached is not None and cached.has_waiters():
                continue
            self._tombstone(workflow_id)
            collected += 1
        self._gc_resume = last if scanned == limit else None
        if collected:
            log.info("closed workflows collected", partition=self.number, count=collected)
        return collected

    # --- commit protocol ---------------------------------------------------------

    def take_pending(self) -> PendingWrites:
        """The writes of the next transaction; they stay readable until applied."""
        if self._committing is not None:
            raise RuntimeError(f"partition {self.number}: the previous commit is not applied")
        pending, self.pending = self.pending, PendingWrites()
        self._committing = pending
        return pending

    def apply_committed(self, pending: PendingWrites, last_offsets: dict[str, int]) -> None:
        """After the commit: the store catches up with what the topics now hold.

        ``last_offsets`` has, per topic, the highest offset Kafka gave a record of this
        partition in the transaction: the next one to read is the store's checkpoint.
        """
        batch = pending.store
        for topic in (self._names.history, self._names.timers):
            if topic in last_offsets:
                batch.checkpoint(topic, last_offsets[topic] + 1)
        if batch:
            self.store.write(batch)
        if self._committing is pending:
            self._committing = None

    def forget_workflows(self) -> None:
        """After an aborted transaction the cached coroutines ran ahead of the topics."""
        self._cache.clear()
        self.pending = PendingWrites()
        self._committing = None

    def forget(self, workflow_id: str) -> None:
        """Drop one cached workflow (its coroutine failed mid-transition); it reloads."""
        self._cache.pop(workflow_id, None)

    def close(self) -> None:
        self._cache.clear()
        self.store.close()

    # --- internals ---------------------------------------------------------------

    def _instance(self, workflow_id: str) -> WorkflowInstance:
        instance = self._cache.get(workflow_id)
        if instance is not None:
            self._cache.move_to_end(workflow_id)
            return instance
        history = [serde.decode_history_event(raw) for raw in self._history(workflow_id)]
        instance = WorkflowInstance.restore(workflow_id, history, self._registry)
        self._cache[workflow_id] = instance
        self._evict()
        return instance

    def _history(self, workflow_id: str) -> list[bytes]:
        """The stored history, with the writes of transactions not applied yet on top."""
        staged = [w.events[workflow_id] for w in self._unapplied() if workflow_id in w.events]
        if not staged:
            return self.store.history(workflow_id)
        by_id: dict[int, bytes | None] = dict(self.store.events(workflow_id))
        for changes in staged:
            by_id.update(changes)
        return [raw for _, raw in sorted(by_id.items()) if raw is not None]

    def _unapplied(self) -> list[PendingWrites]:
        """The writes the store lacks yet: the committing transaction's, then the pending."""
        return [w for w in (self._committing, self.pending) if w is not None]

    def _evict(self) -> None:
        while len(self._cache) > self._cache_size:
            for workflow_id, instance in self._cache.items():
                if not instance.has_waiters():
                    del self._cache[workflow_id]
                    break
            else:
                return

    def _record(self, instance: WorkflowInstance, transition: Transition) -> None:
        pending, names, p = self.pending, self._names, self.number
        for event in transition.events:
            self._put_event(event.workflow_id, event.event_id, serde.encode_history_event(event))
        for timer in transition.timers:
            self._put_timer(
                timer.workflow_id, timer.timer_id, timer.fire_at_ms, serde.encode_timer(timer)
            )
        for workflow_id, timer_id in transition.cancelled_timers:
            self._put_timer(workflow_id, timer_id, 0, None)
        for task in transition.tasks:
            pending.add(
                Outbound(
                    names.tasks(task.task_queue),
                    serde.task_key(task.workflow_id, task.seq),
                    serde.encode_task(task),
                )
            )
        for message in transition.messages:
            key = serde.workflow_key(message.workflow_id)
            pending.add(Outbound(names.inbox, key, serde.encode_inbox(message)))
        for reply in transition.replies:
            key = serde.client_key(reply.client_id)
            pending.add(Outbound(names.replies, key, serde.encode_reply(reply)))
        if transition.status is not None:
            status = transition.status
            key = serde.workflow_key(status.workflow_id)
            pending.add(Outbound(names.status, key, serde.encode_status(status), p))
        if not instance.has_waiters() and instance.is_idle():
            self._cache.move_to_end(instance.workflow_id, last=False)

    def _tombstone(self, workflow_id: str) -> None:
        for event_id in self.store.event_ids(workflow_id):
            self._put_event(workflow_id, event_id, None)
        key = serde.workflow_key(workflow_id)
        self.pending.add(Outbound(self._names.status, key, None, self.number))
        self._cache.pop(workflow_id, None)

    def _put_event(self, workflow_id: str, event_id: int, record: bytes | None) -> None:
        """A history record for the transaction, and the same change staged for the store."""
        key = serde.encode_history_key(workflow_id, event_id)
        self.pending.add(Outbound(self._names.history, key, record, self.number))
        self.pending.store.put_event(workflow_id, event_id, record)
        self.pending.events.setdefault(workflow_id, {})[event_id] = record

    def _put_timer(
        self, workflow_id: str, timer_id: str, fire_at_ms: int, record: bytes | None
    ) -> None:
        """A timer (``record=None``: its tombstone) for the transaction and the store."""
        key = serde.encode_timer_key(workflow_id, timer_id)
        self.pending.add(Outbound(self._names.timers, key, record, self.number))
        self.pending.store.put_timer(workflow_id, timer_id, fire_at_ms, record)
        self.pending.timers.add((workflow_id, timer_id))


def _closed_for_good(event: HistoryEvent) -> bool:
    """The run closed and no new run follows (continue-as-new starts one)."""
    return event.closes_run and not isinstance(event.attributes, WorkflowContinuedAsNew)
