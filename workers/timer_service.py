"""The standalone timer service: owns ``timers`` partitions and fires due timers.

By default the workflow worker fires the timers of its own partitions (docs/runtime.md).
Run this service instead (``chronik timers``, with ``chronik worker --no-timers``) to take
timer load off the workflow workers or to scale the two apart.

For each assigned partition *p* it keeps a due-time index in RocksDB, rebuilt from the
compacted ``timers[p]`` (restore from the offset stored in the index, as the workflow
worker does). Every due timer becomes, in ONE transaction with the consumer's position
of every owned partition (which fences a zombie: `workers.fence_offsets`), a
`TimerFiredReport` to the inbox, and leaves the index. A duplicate fire (after a crash)
is ignored by the workflow.

The tombstone of a fired timer is written by the partition owner, once it handled
the fire — never here. Timer keys repeat across runs (each run's first sleep is
``sleep:1``), and the owner is their one ordered writer: a tombstone written here could
land after the timer a continued-as-new run had just set on the same key, and delete it.
So a timer is never lost; a fired one stays on the topic until its owner's tombstone
comes back through the subscription, which then removes nothing more. The owner writes
one for every fire it handles, a stale one too (its run gone): only a key its workflow
still holds a timer under is left alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from runtime.messages import TimerFiredReport
from runtime.store import PartitionStore, StoreBatch
from topics import serde
from topics.catalogue import TopicNames
from topics.consumed import Consumed, consume_available
from workers.assignment import assign_at_committed
from workers.fence_offsets import FenceOffsets
from workers.membership import Member, on_consume_error, producer_stopped
from workers.restore import FRESH_AS_OF_EVERY_MS, mark_caught_up, open_restored

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TimerServiceConfig:
    member: Member
    #: Due-time indexes live in ``<state_dir>/<namespace>/timers-<p>``.
    state_dir: Path
    max_fires_per_batch: int = 1000
    #: How often stores that consumed nothing are checked to be caught up, and so fresh.
    fresh_as_of_every_ms: int = FRESH_AS_OF_EVERY_MS


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TimerService:
    def __init__(self, config: TimerServiceConfig) -> None:
        self._config = config
        member = config.member
        self._names = TopicNames(member.namespace)
        self._base = member.client_config()
        self._consumer = Consumer(member.group_config(self._names.timer_group))
        self._producer = Producer(member.transactional_producer_config("timer-service"))
        self._stores: dict[int, PartitionStore] = {}
        self._to_restore: set[int] = set()
        #: The timers offset each owned partition commits when nothing was consumed from it.
        self._fence = FenceOffsets(self._consumer, self._names.timers)
        #: When the stores were last checked to be caught up (`_keep_fresh`).
        self._checked_fresh_ms = _now_ms()

    def run(self, stop: threading.Event) -> None:
        self._producer.init_transactions(60)
        self._consumer.subscribe(
            [self._names.timers],
            on_assign=self._on_assign,
            on_revoke=lambda _c, tps: self._release([tp.partition for tp in tps], "revoked"),
            on_lost=lambda _c, tps: self._release([tp.partition for tp in tps], "lost"),
        )
        log.info(
            "timer service started",
            worker_id=self._config.member.worker_id,
            namespace=self._config.member.namespace,
        )
        try:
            while not stop.is_set():
                self._step()
        finally:
            self._consumer.close()
            self._release(list(self._stores), "stopped")

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self._fence.assigned(assign_at_committed(consumer, assigned))
        self._to_restore.update(tp.partition for tp in assigned)
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    def _release(self, numbers: list[int], why: str) -> None:
        if numbers:
            log.info("partitions released", partitions=sorted(numbers), why=why)
        for number in numbers:
            self._to_restore.discard(number)
            self._fence.forget(number)
            store = self._stores.pop(number, None)
            if store is not None:
                store.close()

    def _step(self) -> None:
        records = consume_available(self._consumer, 1000, self._poll_timeout())
        self._restore_assigned()
        batches: dict[int, StoreBatch] = {}
        for message in records:
            if (error := message.error()) is not None:
                on_consume_error(error, self._config.member.worker_id)
                continue
            record = Consumed.of(message)
            store = self._stores.get(record.partition)
            if store is None or record.offset < (store.checkpoint(record.topic) or 0):
                continue  # revoked, or already in the restored index
            batch = batches.setdefault(record.partition, StoreBatch())
            workflow_id, timer_id = record.decode_key(serde.decode_timer_key)
            fire_at = 0 if record.value is None else record.decode(serde.decode_timer).fire_at_ms
            batch.put_timer(workflow_id, timer_id, fire_at, record.value)
            batch.checkpoint(record.topic, record.offset + 1)
            # Whatever comes past this record was appended after it: the index is fresh
            # as of its timestamp (`runtime.store`), and a restart within the topic's
            # delete.retention.ms resumes instead of rebuilding.
            kind, timestamp = message.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE:
                batch.mark_fresh(timestamp)
        for number, batch in batches.items():
            self._stores[number].write(batch)
        self._keep_fresh()
        self._fire_due(consumed=bool(records))

    def _keep_fresh(self) -> None:
        """Mark fresh the stores that hold all their partition holds, every so often.

        A store is fresh as of its last record's timestamp, which an idle partition does
        not move: after a quiet day a restart rebuilt it from offset 0 (`workers.restore`),
        and fired once more every timer fired before whose clear never came. A store the
        records moved in the last interval needs no check (nor a watermark request).
        """
        now = _now_ms()
        every = self._config.fresh_as_of_every_ms
        if now - self._checked_fresh_ms < every:
            return
        self._checked_fresh_ms = now
        idle = {
            number: store
            for number, store in self._stores.items()
            if (fresh := store.fresh_as_of()) is None or now - fresh >= every
        }
        try:
            mark_caught_up(self._consumer, self._names.timers, idle, now)
        except KafkaException as error:  # asked again next interval; restores stay exact
            log.warning("timer stores not checked for freshness", error=str(error))

    def _poll_timeout(self) -> float:
        fire_times = [at for s in self._stores.values() if (at := s.next_fire_at()) is not None]
        if not fire_times:
            return 0.2
        return max(0.0, min(0.2, (min(fire_times) - _now_ms()) / 1000))

    def _fire_due(self, *, consumed: bool) -> None:
        now = _now_ms()
        due = {
            n: s.due_timers(now, self._config.max_fires_per_batch) for n, s in self._stores.items()
        }
        if not consumed and not any(due.values()):
            return
        try:
            self._producer.begin_transaction()
            for timers in due.values():
                for timer in timers:
                    fired = serde.decode_timer(timer.record)
                    report = TimerFiredReport(fired.workflow_id, fired.run_id, fired.timer_id, now)
                    self._producer.produce(
                        self._names.inbox,
                        key=fired.workflow_id.encode(),
                        value=serde.encode_inbox(report),
                    )
            self._producer.send_offsets_to_transaction(
                self._positions(), self._consumer.consumer_group_metadata()
            )
            self._producer.commit_transaction()
        except KafkaException as exception:
            self._abort(exception)
            return
        for number, timers in due.items():
            if timers:
                batch = StoreBatch()
                for timer in timers:
                    batch.put_timer(timer.workflow_id, timer.timer_id, timer.fire_at_ms, None)
                self._stores[number].write(batch)

    def _positions(self) -> list[TopicPartition]:
        """Every owned partition's position on the timers topic, one nothing was consumed
        from since its assignment too: librdkafka knows none for it and sent no offsets
        for a transaction with none, so an idle partition's fires (a timer set long ago,
        restored, due now) went unfenced, and a zombie fired them alongside the new owner."""
        return self._fence.positions(self._stores)

    def _abort(self, exception: KafkaException) -> None:
        error: KafkaError = exception.args[0]
        worker_id = self._config.member.worker_id
        if error.fatal():
            raise producer_stopped(error, worker_id) from exception
        log.warning("timer transaction aborted", error=str(error))
        try:
            self._producer.abort_transaction(30)
        except KafkaException as abort_error:  # stops the service in one line, as fenced
            raise producer_stopped(abort_error.args[0], worker_id) from exception
        # Nothing was applied: the due timers are still in the index and fire next time.

    def _restore_assigned(self) -> None:
        if not self._to_restore:
            return
        stores = open_restored(
            self._base,
            self._names,
            self._config.state_dir / self._config.member.namespace,
            self._to_restore,
            prefix="timers",
            topics=(self._names.timers,),
        )
        for number, store in stores.items():
            self._to_restore.discard(number)
            self._stores[number] = store
        self._fence.learn(stores)  # owned (closed on the way out) should this raise
