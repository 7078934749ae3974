"""The workflow worker: owner of inbox partitions, the apply loop of DESIGN.md.

One loop, one thread, one transactional producer:

1. consume a batch from the owned ``inbox`` partitions (restoring newly assigned ones
   first, outside the rebalance callback);
2. run each message, and each due timer, through the engine (`OwnedPartition`);
3. commit history events, outbound records and the inbox offsets in ONE transaction
   (EOS v2: ``send_offsets_to_transaction`` with the consumer's group metadata, which is
   what fences a zombie that lost its partitions);
4. apply the committed records and their offsets to each partition's RocksDB.

An aborted transaction rewinds the consumer to the committed offsets and drops the cached
workflows, which replay from RocksDB: the store never holds anything Kafka does not.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from runtime.engine import WorkflowRegistry
from topics import dead_letters, serde
from topics.admin import TopicAdmin
from topics.catalogue import MAX_RECORD_BYTES, Catalogue, TopicNames
from topics.consumed import Consumed, consume_available
from topics.errors import DecodeError
from workers.assignment import assign_at_committed, committed_offsets
from workers.fence_offsets import FenceOffsets
from workers.membership import Member, WorkerFencedError, on_consume_error, producer_stopped
from workers.metrics import WorkflowWorkerMetrics
from workers.partition import (
    DEFAULT_RETENTION_MS,
    DEFAULT_WAITER_LEASE_MS,
    Outbound,
    OwnedPartition,
    PendingWrites,
    RecordTooLargeError,
    cached_topics,
)
from workers.restore import FRESH_AS_OF_EVERY_MS, open_restored
from workers.task_placement import TaskPlacement
from workers.transaction import BackgroundTransactions

log = structlog.get_logger(__name__)

#: How long the loop waits for a record while a transaction commits (`WorkflowWorker._step`):
#: the transaction that follows begins at most this long after the commit.
_WHILE_COMMITTING_POLL_S = 0.002


@dataclass(frozen=True, slots=True)
class WorkflowWorkerConfig:
    member: Member
    #: Partition stores live in ``<state_dir>/<namespace>/partition-<p>``.
    state_dir: Path
    max_batch: int = 1000
    cache_size: int = 10_000
    #: Fire the workflow code's timers of owned partitions here; off when `chronik timers`
    #: runs. Activity deadlines are always fired here: history records carry them.
    fire_timers: bool = True
    #: How long a closed workflow keeps its history, status and result: the retention
    #: timer its close sets fires then.
    retention_ms: int = DEFAULT_RETENTION_MS
    #: How long a caller waiting for a result or an update is held without asking again.
    waiter_lease_ms: int = DEFAULT_WAITER_LEASE_MS


#: A dead letter's reason is cut here (an engine error's repr has no bound of its own), and
#: so is its key when the record is too large to write whole.
_MAX_DEAD_LETTER_TEXT = 4_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkflowWorker:
    def __init__(
        self,
        config: WorkflowWorkerConfig,
        registry: WorkflowRegistry,
        metrics: WorkflowWorkerMetrics | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._metrics = metrics or WorkflowWorkerMetrics(CollectorRegistry())
        self._metrics.watch(
            partitions=lambda: len(self._partitions),
            cached=lambda: sum(p.cached_count for p in list(self._partitions.values())),
        )
        member = config.member
        self._names = TopicNames(member.namespace)
        self._base = member.client_config()
        self._consumer = Consumer(member.group_config(self._names.workflow_group))
        self._producer = Producer(
            {
                **member.transactional_producer_config("workflow-worker"),
                "linger.ms": 2,
                "queue.buffering.max.messages": 1_000_000,
            }
        )
        self._admin = TopicAdmin(self._base)
        self._catalogue = Catalogue(member.namespace)
        self._partitions: dict[int, OwnedPartition] = {}
        self._to_restore: set[int] = set()
        self._task_placement = TaskPlacement()
        self._transactions = BackgroundTransactions(
            self._producer, frozenset({self._names.history, self._names.timers})
        )
        #: The writes of the transaction under way, by partition, to apply once it committed.
        self._committing: dict[int, PendingWrites] = {}
        #: The inbox offset each owned partition commits when nothing was consumed from it.
        self._fence = FenceOffsets(self._consumer, self._names.inbox)
        #: A transaction failed inside a rebalance callback: rewind before processing more.
        self._must_rewind = False
        #: When the last transaction was begun (`_idle_for_too_long`).
        self._last_begun_ms = 0
        #: The producer reported a fatal error: it can deliver nothing more (`_close`).
        self._producer_failed = False

    # --- lifecycle ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; a fenced producer ends the loop with an error."""
        self._producer.init_transactions(60)
        self._consumer.subscribe(
            [self._names.inbox],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "workflow worker started",
            worker_id=self._config.member.worker_id,
            namespace=self._config.member.namespace,
            # Every workflow worker of a namespace must list the same: compare them here.
            workflow_types=self._registry.names(),
        )
        try:
            while not stop.is_set():
                self._step()
        finally:
            self._close()

    def _close(self) -> None:
        try:
            self._settle()  # commit what is prepared
        except WorkerFencedError:
            log.warning("the last transaction was fenced", exc_info=True)
        self._transactions.close()
        try:
            self._consumer.close()
        except KafkaException:
            log.warning("consumer close failed", exc_info=True)
        for partition in list(self._partitions.values()):
            partition.close()
        self._partitions.clear()
        if not self._producer_failed:
            # A producer in a fatal state (fenced) is not flushed: its flush raised (a
            # KafkaException, or a SystemError out of a purged record's delivery report)
            # out of `run`'s ``finally``, and a traceback replaced the one-line error that
            # stops the worker.
            self._producer.flush(5)

    # --- rebalance callbacks: no I/O beyond the committed offsets and local stores --

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self._fence.assigned(assign_at_committed(consumer, assigned))
        self._to_restore.update(tp.partition for tp in assigned)
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    def _on_revoke(self, _consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._settle()  # what is prepared is committed (or fails, and is done again)
        self._drop([tp.partition for tp in revoked], "revoked")

    def _on_lost(self, _consumer: Consumer, lost: list[TopicPartition]) -> None:
        self._settle()  # fails if another worker fenced it; then nothing of it stays
        self._drop([tp.partition for tp in lost], "lost")

    def _drop(self, numbers: list[int], why: str) -> None:
        for number in numbers:
            self._to_restore.discard(number)
            self._fence.forget(number)
            partition = self._partitions.pop(number, None)
            if partition is not None:
                partition.close()
        log.info("partitions released", partitions=sorted(numbers), why=why)

    # --- the loop ------------------------------------------------------------------

    def _step(self) -> None:
        """Consume and process batches while the previous transaction commits; then begin
        the transaction of what they staged.

        A first batch is waited for as long as nothing else is due. After it, the loop
        keeps taking what arrives until the commit under way is done: records that came in
        while it only waited for the commit used to wait for the step after, a whole
        transaction later.
        """
        next_offsets: dict[int, int] = {}
        taken = self._take(self._config.max_batch, self._poll_timeout(), next_offsets)
        if taken is None:
            return
        while self._transactions.committing and taken < self._config.max_batch:
            more = self._take(
                self._config.max_batch - taken, _WHILE_COMMITTING_POLL_S, next_offsets
            )
            if more is None:
                return
            taken += more
        now = _now_ms()
        for partition in self._partitions.values():
            partition.fire_due_timers(now)
            partition.expire_waiters(now)
        if not self._settle():
            self._rewind()
            return
        if (
            next_offsets
            or any(p.pending.records for p in self._partitions.values())
            or self._idle_for_too_long(now)
        ):
            self._begin_commit(next_offsets)

    def _take(self, most: int, timeout: float, next_offsets: dict[int, int]) -> int | None:
        """Consume up to ``most`` records and process them, noting in ``next_offsets`` where
        each partition goes on; how many were consumed, or None when the loop rewound
        instead (a transaction failed inside a rebalance callback)."""
        records = consume_available(self._consumer, most, timeout)
        if self._must_rewind:  # these records follow a transaction that failed
            self._rewind()
            return None
        self._restore_assigned()
        now = _now_ms()
        for message in records:
            error = message.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            record = Consumed.of(message)
            partition = self._partitions.get(record.partition)
            if partition is None:
                continue
            self._process(partition, record, now)
            next_offsets[record.partition] = record.offset + 1
        return len(records)

    def _idle_for_too_long(self, now_ms: int) -> bool:
        """Whether a transaction of the fence offsets alone is due.

        A store is fresh as of the last transaction its owner committed
        (`OwnedPartition.apply_committed`); an owner with nothing to process committed
        none, so after a quiet day (a weekend) every store was older than the tombstones'
        retention and a restart rebuilt each from offset 0. A transaction every
        `FRESH_AS_OF_EVERY_MS` keeps them fresh: its commit proves the group still gives
        this worker its partitions, which is all the freshness of a partition with no
        writes rests on.
        """
        return bool(self._partitions) and now_ms - self._last_begun_ms >= FRESH_AS_OF_EVERY_MS

    def _poll_timeout(self) -> float:
        fire_times = [at for p in self._partitions.values() if (at := p.next_fire_at()) is not None]
        if not fire_times:
            return 0.1
        return max(0.0, min(0.1, (min(fire_times) - _now_ms()) / 1000))

    def _process(self, partition: OwnedPartition, record: Consumed, now: int) -> None:
        number, offset = record.partition, record.offset
        partition.pending.tally.messages += 1
        try:
            message = record.decode(serde.decode_inbox)
        except DecodeError as error:
            self._dead_letter(partition, record, str(error))
            return
        try:
            partition.handle(message, now)
        except RecordTooLargeError as error:  # and no run to terminate for it
            self._dead_letter(partition, record, str(error))
        except Exception as error:  # an engine bug must not wedge the partition
            log.exception("message failed in the engine", partition=number, offset=offset)
            partition.forget(message.workflow_id)  # its coroutine may have run half-way
            self._dead_letter(partition, record, f"engine error: {error!r}")

    def _dead_letter(self, partition: OwnedPartition, record: Consumed, reason: str) -> None:
        """The record on ``inbox.dlq`` with why, and where it came from.

        Bounded like every record we write: a producer of another language may put on the
        inbox a record the topic takes but librdkafka will not produce (over 1,000,000
        bytes), and a dead letter that fails its transaction would fail it on every retry,
        for every partition of this worker. Such a value is left out (``chronik.truncated``
        and its size say so); the headers still locate the original on the inbox.
        """
        log.warning("inbox record dead-lettered", reason=reason, at=record.location)
        partition.pending.tally.dead_letters += 1
        if len(reason) > _MAX_DEAD_LETTER_TEXT:
            reason = reason[:_MAX_DEAD_LETTER_TEXT] + "..."
        key, value = record.key or b"", record.value
        headers: tuple[tuple[str, bytes], ...] = (
            (dead_letters.REASON, reason.encode()),
            (dead_letters.TOPIC, record.topic.encode()),
            (dead_letters.PARTITION, str(record.partition).encode()),
            (dead_letters.OFFSET, str(record.offset).encode()),
            *((n, v) for n, v in record.headers if n == dead_letters.REDRIVEN_FROM),
        )
        size = len(key) + len(value or b"") + sum(len(n) + len(v) for n, v in headers)
        if size > MAX_RECORD_BYTES:
            headers += (
                (dead_letters.TRUNCATED, b"value"),
                (dead_letters.ORIGINAL_SIZE, str(len(value or b"")).encode()),
            )
            key, value = key[:_MAX_DEAD_LETTER_TEXT], b""
        partition.pending.add(Outbound(self._names.inbox_dlq, key, value, headers=headers))

    def _restore_assigned(self) -> None:
        """Restore every newly assigned partition (together: one consumer), then own them."""
        if not self._to_restore:
            return
        began = time.monotonic()
        stores = open_restored(
            self._base,
            self._names,
            self._config.state_dir / self._config.member.namespace,
            self._to_restore,
            prefix="partition",
            topics=cached_topics(self._names, fires_timers=self._config.fire_timers),
        )
        self._metrics.restore_seconds.observe(time.monotonic() - began)
        self._fence.learn(stores)
        for number, store in stores.items():
            self._to_restore.discard(number)
            self._partitions[number] = OwnedPartition(
                number,
                store,
                self._registry,
                self._names,
                cache_size=self._config.cache_size,
                fires_timers=self._config.fire_timers,
                retention_ms=self._config.retention_ms,
                waiter_lease_ms=self._config.waiter_lease_ms,
            )

    # --- the transaction -------------------------------------------------------------

    def _begin_commit(self, next_offsets: dict[int, int]) -> None:
        """Start the transaction of what this step staged; `_settle` finishes it."""
        now = self._last_begun_ms = _now_ms()  # before any record: stores fresh as of then
        self._committing = {n: p.take_pending(now) for n, p in self._partitions.items()}
        self._ensure_task_topics(self._committing)
        records = self._task_placement.place(
            record for pending in self._committing.values() for record in pending.records
        )
        self._transactions.start(
            records, self._inbox_positions(next_offsets), self._consumer.consumer_group_metadata()
        )

    def _settle(self) -> bool:
        """Wait for the transaction under way and apply it to the stores; False if it failed.

        A failed transaction is aborted; the caller rewinds the consumer and drops every
        cached workflow (`_rewind`), here or after the rebalance callback returned.
        """
        if not self._transactions.under_way:
            return True
        committing, self._committing = self._committing, {}
        try:
            last_offsets = self._transactions.wait()
        except KafkaException as exception:
            self._metrics.aborted()
            self._abort(exception)
            return False
        settled = self._transactions.last_settled
        self._metrics.committed(
            (pending.tally for pending in committing.values()), settled.records, settled.seconds
        )
        for number, pending in committing.items():
            partition = self._partitions.get(number)
            if partition is not None:
                mine = {topic: o for (topic, n), o in last_offsets.items() if n == number}
                partition.apply_committed(pending, mine)
        return True

    def _inbox_positions(self, next_offsets: dict[int, int]) -> list[TopicPartition]:
        """Every owned partition's inbox offset: a transaction with none would not fence
        (`workers.fence_offsets`)."""
        return self._fence.positions(self._partitions, next_offsets)

    def _abort(self, exception: KafkaException) -> None:
        error: KafkaError = exception.args[0]
        worker_id = self._config.member.worker_id
        if error.fatal() or error.code() == KafkaError._FENCED:
            self._producer_failed = True
            raise producer_stopped(error, worker_id) from exception
        log.warning("transaction aborted", error=str(error))
        try:
            self._producer.abort_transaction(30)
        except KafkaException as abort_error:
            self._producer_failed = True
            raise producer_stopped(abort_error.args[0], worker_id) from exception
        self._must_rewind = True  # `_rewind` also drops the workflows that ran ahead

    def _rewind(self) -> None:
        """Back to the committed offsets: what follows them is consumed and processed again."""
        owned = [TopicPartition(self._names.inbox, n) for n in self._partitions]
        for tp in committed_offsets(self._consumer, owned):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            self._fence.move(tp.partition, tp.offset)
        for partition in self._partitions.values():
            partition.forget_workflows()
        self._must_rewind = False

    def _ensure_task_topics(self, pendings: dict[int, PendingWrites]) -> None:
        """Create the topics of task queues seen for the first time, and learn their size."""
        wanted = {
            record.topic
            for pending in pendings.values()
            for record in pending.records
            if self._names.is_task_topic(record.topic)
            and not self._task_placement.knows(record.topic)
        }
        for topic in wanted:
            queue = self._names.queue_of(topic)
            self._task_placement.learn(topic, self._admin.ensure_task_queue(self._catalogue, queue))
            group = self._names.activity_group(queue)
            if self._admin.group_has_members(group) is False:
                # A misspelt task queue waits forever and says nothing (Temporal's UI shows
                # "no pollers"): say it once, when the queue is first used here.
                log.warning(
                    "no activity worker polls this task queue: its tasks wait until one runs "
                    "(chronik worker ... --task-queue QUEUE)",
                    task_queue=queue,
                    consumer_group=group,
                )

    def _on_consume_error(self, error: KafkaError) -> None:
        on_consume_error(error, self._config.member.worker_id)
