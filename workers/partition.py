"""One owned partition: its store, its cached workflows, and what processing them produces.

This is the partition processor without Kafka: it turns decoded inbox messages and due
timers into `Transition`s through the engine, and accumulates what must be written — the
outbound records of the next transaction and the store changes to apply once that
transaction committed. The worker loop (`workers.workflow_worker`) owns the consumer and
the producer and decides when to commit.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NoReturn

import structlog

from runtime.engine import (
    Transition,
    WorkflowInstance,
    WorkflowRegistry,
    closed_status,
    is_activity_timer,
)
from runtime.events import (
    HistoryEvent,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    WorkflowTaskFailed,
)
from runtime.messages import (
    CancelActivityTask,
    DurableTimer,
    GetWorkflowResult,
    HistoryPage,
    InboxMessage,
    Reply,
    RequestFailed,
    TerminateWorkflow,
    TimerFiredReport,
    WorkflowOutcome,
    WorkflowStatus,
)
from runtime.payloads import Failure
from runtime.store import BACKGROUND_TIMER_PREFIX, DueTimer, PartitionStore, StoreBatch
from topics import carried_timers, serde
from topics.carried_timers import TimerChange
from topics.catalogue import MAX_RECORD_BYTES, TopicNames
from workers.restore import FRESH_AS_OF_EVERY_MS

log = structlog.get_logger(__name__)

#: The timer that ends a closed workflow's retention (`OwnedPartition._end_retention`): set
#: by the transition that closes the run for good, carried by its last history record like
#: an activity deadline, fired by the owner to itself — never delivered to the engine.
RETENTION_TIMER = BACKGROUND_TIMER_PREFIX + "retention"
#: Retention ends per loop step at most (each reads a history and writes its tombstones):
#: a backlog drains a slice per step, and the step stays short.
RETENTION_ENDS_PER_STEP = 200
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
#: How long a caller waiting for a result or an update is held without asking again
#: (`runtime.engine.waiters`): six of our clients' re-ask intervals.
DEFAULT_WAITER_LEASE_MS = 60_000


class RecordTooLargeError(ValueError):
    """A transition would write a record larger than Kafka takes."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """A record for the next transaction. ``partition=None``: the murmur2 partitioner picks."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    #: Written to every partition of its topic (a task queue's cancellation: whichever
    #: partition holds the task, the worker reading it must hear of the cancel).
    every_partition: bool = False


@dataclass(slots=True)
class Tally:
    """What one transaction did, for the worker's metrics (`workers.metrics`).

    Counted with the writes and read once the transaction committed: a step that aborted
    and ran again is counted once, as its effects happened once.
    """

    messages: int = 0
    dead_letters: int = 0
    #: By workflow type.
    started: Counter[str] = field(default_factory=Counter)
    #: By (workflow type, the status the run closed with).
    closed: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: By workflow type.
    task_failures: Counter[str] = field(default_factory=Counter)


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
    #: When the transaction was taken to be committed (None: not said). Once it commits,
    #: nothing past the partition's new checkpoints was appended before then.
    taken_at_ms: int | None = None
    tally: Tally = field(default_factory=Tally)

    def add(self, record: Outbound) -> None:
        self.records.append(record)


def cached_topics(names: TopicNames, *, fires_timers: bool) -> tuple[str, ...]:
    """The topics an owner's store is a cache of, and restores and checkpoints.

    History always: its records carry the activity deadlines. Timers only when the owner
    fires the workflow code's timers — a store that holds none must not claim to have
    read them, or a later owner that fires them would skip the topic; and one that read
    them is rebuilt without them when its owner stops firing them (`workers.restore`).
    """
    if fires_timers:
        return (names.history, names.timers)
    return (names.history,)


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
        fires_timers: bool = True,
        retention_ms: int = DEFAULT_RETENTION_MS,
        max_record_bytes: int = MAX_RECORD_BYTES,
        waiter_lease_ms: int = DEFAULT_WAITER_LEASE_MS,
    ) -> None:
        self.number = number
        self._waiter_lease_ms = waiter_lease_ms
        #: When `expire_waiters` next looks (a quarter lease apart: the cache is walked).
        self._next_expiry_ms = 0
        #: How long a workflow that closed for good keeps its history, status and result.
        self.retention_ms = retention_ms
        self._max_record_bytes = max_record_bytes
        #: Whether the store holds (and this owner fires) the workflow code's timers, or
        #: only the activity deadlines that history records carry.
        self.fires_timers = fires_timers
        self.store = store
        self._registry = registry
        self._names = names
        self._cache: OrderedDict[str, WorkflowInstance] = OrderedDict()
        self._cache_size = cache_size
        self.pending = PendingWrites()
        #: Taken by a transaction that has not been applied to the store yet: the worker
        #: processes the next batch while the previous one commits.
        self._committing: PendingWrites | None = None
        #: The newest fresh-as-of time a commit proved (the store may lag it a little).
        self._fresh_as_of_ms = store.fresh_as_of()

    # --- processing --------------------------------------------------------------

    def handle(self, message: InboxMessage, now_ms: int) -> None:
        """Run ``message`` through its workflow and stage what that writes.

        A transition with a record Kafka would refuse (larger than ``max_record_bytes``)
        would fail every transaction that carries it; it is not staged, and the run is
        terminated with the reason instead. A message that reaches no run to terminate
        raises `RecordTooLargeError`: the worker dead-letters it.

        A timer the timer service fired is cleared here, by the one ordered writer of
        timer keys: cleared by the service, its tombstone could land after a timer the next
        run set on the same key, deleting that one. It is cleared whether the workflow took
        the fire or ignored it (its run closed, collected, or the id on another run): left
        on the compacted topic, an ignored one was fired again by every rebuild of the
        service's store. Only a key the workflow still holds a timer under is kept.
        """
        fired_by_service = None
        if isinstance(message, TimerFiredReport) and not self.fires_timers:
            fired_by_service = (message.workflow_id, message.timer_id)
        self._deliver(message, now_ms, clear_unless_held=fired_by_service)

    def fire_due_timers(
        self, now_ms: int, limit: int = 1000, retention_limit: int = RETENTION_ENDS_PER_STEP
    ) -> int:
        """Deliver every due timer to its workflow and clear it, in the pending writes;
        then end up to ``retention_limit`` due retentions. Returns how many fired.

        The store holds the timers this owner fires: activity deadlines and retention
        timers always, the workflow code's timers unless `chronik timers` fires those
        (``fires_timers``). Retention timers are background timers (their own due index):
        a backlog of them waits behind the workflows' timers, never in front.
        """
        fired = 0
        for timer in self.store.due_timers(now_ms, limit):
            if not self._touched_unapplied(timer.workflow_id, timer.timer_id):
                fired += self._guarded(
                    timer, lambda t: self._fire(t.workflow_id, t.timer_id, t.record, now_ms)
                )
        collected = 0
        for timer in self.store.due_timers(now_ms, retention_limit, background=True):
            if not self._touched_unapplied(timer.workflow_id, timer.timer_id):
                collected += self._guarded(
                    timer, lambda t: self._end_retention(t.workflow_id, now_ms)
                )
        if collected:
            log.debug("closed workflows collected", partition=self.number, count=collected)
        return fired + collected

    def expire_waiters(self, now_ms: int) -> int:
        """Forget the callers not heard from for a lease; return how many were forgotten.

        A cached workflow that only they kept in memory leaves it now, as it would have
        had they been answered: closed ones at once, the rest when the cache is full.
        """
        if now_ms < self._next_expiry_ms:
            return 0
        self._next_expiry_ms = now_ms + self._waiter_lease_ms // 4
        dropped = 0
        asked_before = now_ms - self._waiter_lease_ms
        for workflow_id, instance in list(self._cache.items()):
            if instance.has_waiters() and instance.expire_waiters(asked_before):
                dropped += 1
                if not instance.has_waiters() and instance.is_closed():
                    del self._cache[workflow_id]
        if dropped:
            log.info("callers that stopped asking forgotten", partition=self.number, count=dropped)
        self._evict()
        return dropped

    def _guarded(self, timer: DueTimer, act: Callable[[DueTimer], int]) -> int:
        """``act`` on a due timer; an engine error drops the timer (from
        this store) instead of ending the worker — it was still due on restart, so every
        owner of the partition crashed on it in turn. The inbox path dead-letters such
        errors the same way."""
        try:
            return act(timer)
        except Exception:
            log.exception(
                "timer dropped: the engine failed on it",
                partition=self.number,
                workflow_id=timer.workflow_id,
                timer=timer.timer_id,
            )
            self.forget(timer.workflow_id)  # its coroutine may have run half-way
            self._stage_timer(timer.workflow_id, timer.timer_id, 0, None)
            return 0

    def _touched_unapplied(self, workflow_id: str, timer_id: str) -> bool:
        """Fired, cancelled or moved by a transaction the store lacks yet."""
        return any((workflow_id, timer_id) in w.timers for w in self._unapplied())

    def _fire(self, workflow_id: str, timer_id: str, raw: bytes, now_ms: int) -> int:
        """Deliver one timer's fire to its workflow; the transition also clears it."""
        record = serde.decode_timer(raw)
        report = TimerFiredReport(workflow_id, record.run_id, timer_id, now_ms)
        try:
            self._deliver(report, now_ms, clear=(workflow_id, timer_id))
        except RecordTooLargeError:
            log.exception("timer fire dropped", partition=self.number, timer=timer_id)
        return 1

    @property
    def cached_count(self) -> int:
        """How many workflows are in memory."""
        return len(self._cache)

    def caches(self, workflow_id: str) -> bool:
        """Whether the workflow is in memory (running, or holding callers that wait)."""
        return workflow_id in self._cache

    def next_fire_at(self) -> int | None:
        return self.store.next_fire_at()

    # --- commit protocol ---------------------------------------------------------

    def take_pending(self, now_ms: int | None = None) -> PendingWrites:
        """The writes of the next transaction, begun at ``now_ms``; they stay readable
        until applied."""
        if self._committing is not None:
            raise RuntimeError(f"partition {self.number}: the previous commit is not applied")
        pending, self.pending = self.pending, PendingWrites()
        pending.taken_at_ms = now_ms
        self._committing = pending
        return pending

    def apply_committed(self, pending: PendingWrites, last_offsets: dict[str, int]) -> None:
        """After the commit: the store catches up with what the topics now hold.

        ``last_offsets`` has, per topic, the highest offset Kafka gave a record of this
        partition in the transaction: the next one to read is the store's checkpoint.

        The commit also makes the store fresh as of when the transaction was taken
        (`runtime.store`): the owner is the only writer of its partition's history and
        timers, every earlier transaction is applied, and this one committed with the
        inbox offsets of every owned partition — so the consumer group still gave it this
        partition, and whatever comes past the checkpoints comes later. That holds for a
        partition the transaction wrote nothing to as well; its store learns it at most
        `FRESH_AS_OF_EVERY_MS` late (and on `close`), sparing a write per transaction.
        """
        batch = pending.store
        for topic in self.restored_topics:
            if topic in last_offsets:
                batch.checkpoint(topic, last_offsets[topic] + 1)
        taken = pending.taken_at_ms
        if taken is not None:
            if self._fresh_as_of_ms is None or taken > self._fresh_as_of_ms:
                self._fresh_as_of_ms = taken
            stored = self.store.fresh_as_of()
            if batch or stored is None or taken - stored >= FRESH_AS_OF_EVERY_MS:
                batch.mark_fresh(taken)
        if batch:
            self.store.write(batch)
        if self._committing is pending:
            self._committing = None

    @property
    def restored_topics(self) -> tuple[str, ...]:
        return cached_topics(self._names, fires_timers=self.fires_timers)

    def forget_workflows(self) -> None:
        """After an aborted transaction the cached coroutines ran ahead of the topics."""
        self._cache.clear()
        self.pending = PendingWrites()
        self._committing = None

    def forget(self, workflow_id: str) -> None:
        """Drop one cached workflow (its coroutine failed mid-transition); it reloads."""
        self._cache.pop(workflow_id, None)

    def close(self) -> None:
        """Release the partition; the store keeps the freshest time a commit proved."""
        self._cache.clear()
        fresh, stored = self._fresh_as_of_ms, self.store.fresh_as_of()
        if fresh is not None and (stored is None or fresh > stored):
            batch = StoreBatch()
            batch.mark_fresh(fresh)
            self.store.write(batch)
        self.store.close()

    # --- internals ---------------------------------------------------------------

    def _deliver(
        self,
        message: InboxMessage,
        now_ms: int,
        *,
        clear: tuple[str, str] | None = None,
        clear_unless_held: tuple[str, str] | None = None,
    ) -> None:
        """`handle`; ``clear`` is a fired timer the transition also removes;
        ``clear_unless_held``: the timer the message fires, to clear unless the workflow
        holds a timer under its key once the message is handled (a later run's, or a later
        deadline: that one is the key's record on the topic now)."""
        instance = self._instance(message.workflow_id)
        transition = instance.handle(message, now_ms)
        if clear_unless_held is not None and not instance.holds_timer(clear_unless_held[1]):
            clear = clear_unless_held
        # The fired timer is cleared, unless the transition set its key again: timer ids
        # repeat across runs (a run that continues as new from a timer's fire sleeps on
        # "sleep:1" again), and the clear, applied last, would delete the new timer.
        if clear is not None and clear not in {
            (t.workflow_id, t.timer_id) for t in transition.timers
        }:
            transition.cancelled_timers.append(clear)
        try:
            self._record(instance, transition)
        except RecordTooLargeError as error:
            if not self._terminate(message.workflow_id, error, now_ms, transition):
                self._answer_refused(message, error)
                raise

    def _terminate(
        self, workflow_id: str, error: RecordTooLargeError, now_ms: int, dropped: Transition
    ) -> bool:
        """End the run whose transition Kafka would refuse, saying why (as Temporal does).

        Callers the dropped transition answered with the run's outcome ask again, and hear
        how it really ended. False when no run is left to end: the transition started it.
        """
        ran_ahead = self._cache.pop(workflow_id, None)  # its coroutine ran past the history
        instance = self._instance(workflow_id)
        if ran_ahead is not None:
            instance.adopt_waiters(ran_ahead)  # callers of the result hear of the end now
        status = instance.status()
        if status is None or status.status != WorkflowStatus.RUNNING:
            return False
        log.warning("run terminated", workflow_id=workflow_id, reason=str(error))
        reason = f"a workflow task wrote a record Kafka refuses: {error}"
        request_id = f"chronik:record-too-large:{status.run_id}"
        self._record(
            instance,
            instance.handle(TerminateWorkflow(workflow_id, None, reason, request_id), now_ms),
        )
        for reply in dropped.replies:
            if isinstance(reply.body, WorkflowOutcome):
                ask = GetWorkflowResult(
                    workflow_id, reply.body.run_id, reply.request_id, reply.client_id
                )
                self._record(instance, instance.handle(ask, now_ms))
        return True

    def _answer_refused(self, message: InboxMessage, error: RecordTooLargeError) -> None:
        """Tell whoever sent ``message`` (a request names where to answer) why it failed."""
        reply_to: str | None = getattr(message, "reply_to", None)
        request_id: str = getattr(message, "request_id", "")
        if reply_to and request_id:
            failure = Failure(str(error), type="RecordTooLarge", non_retryable=True)
            refused = Reply(reply_to, request_id, message.workflow_id, RequestFailed(failure))
            self.pending.add(self._reply_record(refused))

    def _instance(self, workflow_id: str) -> WorkflowInstance:
        instance = self._cache.get(workflow_id)
        if instance is not None:
            self._cache.move_to_end(workflow_id)
            return instance
        history = [serde.decode_history_event(raw) for raw in self._history(workflow_id)]
        instance = WorkflowInstance.restore(workflow_id, history, self._registry)
        # Room first: evicted right after it was added, the instance would take the caller
        # its message registers out of memory with it.
        self._evict(room=1)
        self._cache[workflow_id] = instance
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

    def _evict(self, room: int = 0) -> None:
        """Drop the least recently used instances nobody waits on, down to ``room`` below
        the cache size (or as near as the waited-on ones allow)."""
        while len(self._cache) > self._cache_size - room:
            for workflow_id, instance in self._cache.items():
                if not instance.has_waiters():
                    del self._cache[workflow_id]
                    break
            else:
                return

    def _record(self, instance: WorkflowInstance, transition: Transition) -> None:
        """Stage the transition's records and store changes; nothing if one is too large."""
        pending, names, p = self.pending, self._names, self.number
        for event in transition.events:
            if isinstance(event.attributes, WorkflowTaskFailed):  # an operator must know
                log.warning(
                    "workflow task failed: the run waits for code that can replay it",
                    partition=p,
                    workflow_id=event.workflow_id,
                    run_id=event.run_id,
                    reason=event.attributes.failure.message,
                )
        history = [
            (event, serde.encode_history_key(event.workflow_id, event.event_id))
            for event in transition.events
        ]
        values = [serde.encode_history_event(event) for event in transition.events]
        outbound = [
            Outbound(
                names.tasks(task.task_queue),
                serde.task_key(task.workflow_id, task.seq),
                serde.encode_task(task),
                every_partition=isinstance(task, CancelActivityTask),
            )
            for task in transition.tasks
        ]
        outbound += [
            Outbound(names.inbox, serde.workflow_key(m.workflow_id), serde.encode_inbox(m))
            for m in transition.messages
        ]
        timers = self._plan_timers(transition)
        carried = tuple(timers.headers)
        header_bytes = sum(len(name) + len(value) for name, value in carried)
        for index, ((event, key), raw) in enumerate(zip(history, values, strict=True)):
            size = len(key) + len(raw) + (header_bytes if index == len(history) - 1 else 0)
            if size > self._max_record_bytes:
                self._refuse(size, f"{type(event.attributes).__name__} event")
        for record in outbound:
            if (size := len(record.key) + len(record.value or b"")) > self._max_record_bytes:
                self._refuse(size, f"{record.topic} record")
        self._apply_timers(timers)
        self._count(instance, transition, pending.tally)
        for index, ((event, key), raw) in enumerate(zip(history, values, strict=True)):
            headers = carried if index == len(history) - 1 else ()
            self._put_event(event.workflow_id, event.event_id, key, raw, headers)
        for record in outbound:
            pending.add(record)
        for reply in transition.replies:
            pending.add(self._reply_record(reply))
        if transition.status is not None:
            status = transition.status
            key = serde.workflow_key(status.workflow_id)
            pending.add(Outbound(names.status, key, serde.encode_status(status), p))
        if not instance.has_waiters() and instance.is_closed():
            # Read again only if someone asks (it replays from the store then); kept, the
            # closed workflows filled the cache and every full garbage collection walked
            # them all: 1.5 s pauses once a minute at 1,000 workflows/s.
            self._cache.pop(instance.workflow_id, None)

    @staticmethod
    def _count(instance: WorkflowInstance, transition: Transition, tally: Tally) -> None:
        """The starts, closes and task failures of a transition that is staged.

        Each is counted under the type of the run it happened to: a transition that
        continues a run as new closes one run and starts the next, whose type (the one
        the transition's status record names) may be another.
        """
        for event in transition.events:
            attrs = event.attributes
            if isinstance(attrs, WorkflowStarted):
                tally.started[attrs.workflow_type] += 1
                continue
            closed = closed_status(attrs)
            if closed is None and not isinstance(attrs, WorkflowTaskFailed):
                continue
            workflow_type = instance.workflow_type_of(event.run_id)
            if workflow_type is None:
                continue
            if closed is not None:
                tally.closed[(workflow_type, closed.value)] += 1
            else:
                tally.task_failures[workflow_type] += 1

    def _refuse(self, size: int, what: str) -> NoReturn:
        """Raise for a record over the limit (the message is built only then: this is on
        the path of every record)."""
        raise RecordTooLargeError(
            f"a {what} is {size:,} bytes encoded; the limit is {self._max_record_bytes:,}"
        )

    def _reply_record(self, reply: Reply) -> Outbound:
        """The reply's record; an answer too large to send is answered with why instead."""
        key = serde.client_key(reply.client_id)
        value = serde.encode_reply(reply)
        if len(key) + len(value) > self._max_record_bytes and isinstance(reply.body, HistoryPage):
            value = self._fit_page(reply, reply.body.events, self._max_record_bytes - len(key))
        if len(key) + len(value) > self._max_record_bytes:
            failure = Failure(
                f"the answer to request {reply.request_id} is {len(value):,} bytes encoded; "
                f"the limit is {self._max_record_bytes:,}",
                type="RecordTooLarge",
                non_retryable=True,
            )
            value = serde.encode_reply(replace(reply, body=RequestFailed(failure)))
        return Outbound(self._names.replies, key, value)

    def _stage_retention(self, workflow_id: str, run_id: str, fire_at: int) -> None:
        """Stage the retention timer at ``fire_at`` in the store alone."""
        header = _retention_header(workflow_id, run_id, fire_at)
        self._stage_timer(workflow_id, RETENTION_TIMER, fire_at, header[1])

    def _end_retention(self, workflow_id: str, now_ms: int) -> int:
        """Tombstone the workflow's history and status, if its retention is really over.

        The timer may be stale: the id was started again (id reuse) and that run is still
        going — its close will set the timer anew — or the retention grew since the close.
        Then the timer is only dropped or moved, in the store alone: a store rebuilt from
        history may fire it once more, and it is checked again. Returns 1 when the
        workflow was collected.
        """
        if any(workflow_id in w.events for w in self._unapplied()):
            return 0  # a transaction the store lacks yet wrote to it: look again after it
        stored = self.store.events(workflow_id)
        last = serde.decode_history_event(stored[-1][1]) if stored else None
        if last is None or not _closed_for_good(last):
            self._stage_timer(workflow_id, RETENTION_TIMER, 0, None)
            return 0
        cached = self._cache.get(workflow_id)
        ends_at = last.timestamp_ms + self.retention_ms
        if ends_at > now_ms or (cached is not None and cached.has_waiters()):
            later = max(ends_at, now_ms + _RETENTION_RECHECK_MS)
            self._stage_retention(workflow_id, last.run_id, later)  # in the store alone
            return 0
        self._tombstone(workflow_id, [event_id for event_id, _ in stored])
        return 1

    def _tombstone(self, workflow_id: str, event_ids: list[int]) -> None:
        """Tombstones for the history and status keys; the last one clears the timer."""
        cleared = (carried_timers.clear_header(workflow_id, RETENTION_TIMER),)
        for index, event_id in enumerate(event_ids):
            key = serde.encode_history_key(workflow_id, event_id)
            headers = cleared if index == len(event_ids) - 1 else ()
            self._put_event(workflow_id, event_id, key, None, headers)
        self._stage_timer(workflow_id, RETENTION_TIMER, 0, None)
        key = serde.workflow_key(workflow_id)
        self.pending.add(Outbound(self._names.status, key, None, self.number))
        self._cache.pop(workflow_id, None)

    def _fit_page(self, reply: Reply, events: tuple[HistoryEvent, ...], limit: int) -> bytes:
        """The reply with as many of its page's first events as fit in ``limit`` bytes,
        marked ``more`` (the client asks for the rest); the whole reply if none fits.
        ``events`` are the page's.

        Each event costs about its encoding as a history record, so the first cut is
        close; it shrinks until the encoded reply really fits.
        """
        frame = len(serde.encode_reply(replace(reply, body=HistoryPage((), more=True))))
        budget, count = limit - frame, 0
        for event in events:
            budget -= len(serde.encode_history_event(event))
            if budget < 0:
                break
            count += 1
        while count > 0:
            page = HistoryPage(events[:count], more=True)
            value = serde.encode_reply(replace(reply, body=page))
            if len(value) <= limit:
                return value
            count = count * 9 // 10
        return serde.encode_reply(reply)

    def _plan_timers(self, transition: Transition) -> _TimerWrites:
        """The transition's timer changes, where each goes; nothing is staged yet.

        Activity deadlines ride on the transition's last history record (see
        `topics.carried_timers`), and so does the retention timer of a run the transition
        closes for good; the workflow code's timers, and any change of a transition without
        history, go to the timers topic. Planned before the size checks, which count the
        carried headers: a refused transition must leave nothing staged.
        """
        plan = _TimerWrites()
        for timer in transition.timers:
            if transition.events and is_activity_timer(timer.timer_id):
                plan.carry(
                    carried_timers.set_header(timer),
                    timer.workflow_id,
                    timer.timer_id,
                    timer.fire_at_ms,
                )
            else:
                record = serde.encode_timer(timer)
                plan.topic.append((timer.workflow_id, timer.timer_id, timer.fire_at_ms, record))
        for workflow_id, timer_id in transition.cancelled_timers:
            if not is_activity_timer(timer_id):
                plan.topic.append((workflow_id, timer_id, 0, None))
            elif transition.events:
                clear = carried_timers.clear_header(workflow_id, timer_id)
                plan.carry(clear, workflow_id, timer_id)
            else:
                # Without history to carry it, the clear stays in the store: a rebuilt
                # store may fire the timer once more, and the workflow ignores a stale fire.
                plan.store_only.append((workflow_id, timer_id, 0, None))
        # Only the last event counts: a start that terminates the running run (id reuse)
        # closes one run and begins the next in one transition.
        if transition.events and _closed_for_good(last := transition.events[-1]):
            fire_at = last.timestamp_ms + self.retention_ms
            header = _retention_header(last.workflow_id, last.run_id, fire_at)
            plan.carry(header, last.workflow_id, RETENTION_TIMER, fire_at)
        return plan

    def _apply_timers(self, plan: _TimerWrites) -> None:
        for change in plan.store_only:
            self._stage_timer(*change)
        for change in plan.topic:
            self._put_timer(*change)

    def _put_event(
        self,
        workflow_id: str,
        event_id: int,
        key: bytes,
        record: bytes | None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """A history record for the transaction, and the same change staged for the store."""
        self.pending.add(Outbound(self._names.history, key, record, self.number, headers))
        self.pending.store.put_event(workflow_id, event_id, record)
        self.pending.events.setdefault(workflow_id, {})[event_id] = record

    def _put_timer(
        self, workflow_id: str, timer_id: str, fire_at_ms: int, record: bytes | None
    ) -> None:
        """A timer (``record=None``: its tombstone) on the timers topic, and in the store
        if this owner fires the workflow code's timers."""
        key = serde.encode_timer_key(workflow_id, timer_id)
        self.pending.add(Outbound(self._names.timers, key, record, self.number))
        if self.fires_timers:
            self._stage_timer(workflow_id, timer_id, fire_at_ms, record)

    def _stage_timer(
        self, workflow_id: str, timer_id: str, fire_at_ms: int, record: bytes | None
    ) -> None:
        """A timer change for the store once the transaction committed (None: removed)."""
        self.pending.store.put_timer(workflow_id, timer_id, fire_at_ms, record)
        self.pending.timers.add((workflow_id, timer_id))


@dataclass(slots=True)
class _TimerWrites:
    """A transition's timer changes: the headers its last history record carries, the
    changes for the store alone (the carried ones among them), those for the timers topic."""

    headers: list[tuple[str, bytes]] = field(default_factory=list)
    store_only: list[TimerChange] = field(default_factory=list)
    topic: list[TimerChange] = field(default_factory=list)

    def carry(
        self, header: tuple[str, bytes], workflow_id: str, timer_id: str, fire_at_ms: int = 0
    ) -> None:
        """A carried set (``fire_at_ms`` > 0, the header's value is the timer record) or
        clear; the store applies it as well."""
        self.headers.append(header)
        record = header[1] if fire_at_ms else None
        self.store_only.append((workflow_id, timer_id, fire_at_ms, record))


def _retention_header(workflow_id: str, run_id: str, fire_at: int) -> tuple[str, bytes]:
    """The retention timer at ``fire_at`` as a history record header (its value is the
    timer's record)."""
    return carried_timers.set_header(DurableTimer(workflow_id, run_id, RETENTION_TIMER, fire_at))


#: How soon a retention timer that found the workflow still wanted looks again.
_RETENTION_RECHECK_MS = 60_000


def _closed_for_good(event: HistoryEvent) -> bool:
    """The run closed and no new run follows (continue-as-new starts one)."""
    return event.closes_run and not isinstance(event.attributes, WorkflowContinuedAsNew)
