"""An owned partition reads its own writes while their transaction is still committing.

The workflow worker processes the next batch while the previous transaction commits, so
the partition's store lags its staged writes by up to two transactions. These tests drive
`OwnedPartition` with a real RocksDB store and no Kafka: a workflow reloaded in that
window must see its whole history, and a timer fired in that window must not fire again.
"""

from __future__ import annotations

from pathlib import Path

from examples.order import one_activity
from runtime.engine import WorkflowRegistry
from runtime.events import ActivityScheduled, HistoryEvent, WorkflowCompleted
from runtime.messages import ActivityCompletedReport, StartWorkflow
from runtime.store import PartitionStore
from topics import serde
from topics.catalogue import TopicNames
from workers.partition import OwnedPartition, PendingWrites

NAMES = TopicNames("t")


def _partition(tmp_path: Path) -> OwnedPartition:
    registry = WorkflowRegistry([one_activity])
    return OwnedPartition(0, PartitionStore(tmp_path / "p0"), registry, NAMES, cache_size=10)


def _events(pending: PendingWrites) -> list[HistoryEvent]:
    return [
        serde.decode_history_event(record.value)
        for record in pending.records
        if record.topic == NAMES.history and record.value is not None
    ]


def _start(partition: OwnedPartition, now_ms: int = 1_000) -> HistoryEvent:
    """Start one_activity as "w"; return its ActivityScheduled event."""
    partition.handle(StartWorkflow("w", "one_activity", "q", (), "request-1"), now_ms)
    scheduled = [
        e for e in _events(partition.pending) if isinstance(e.attributes, ActivityScheduled)
    ]
    assert len(scheduled) == 1
    return scheduled[0]


def _complete(scheduled: HistoryEvent) -> ActivityCompletedReport:
    attributes = scheduled.attributes
    assert isinstance(attributes, ActivityScheduled)
    return ActivityCompletedReport("w", scheduled.run_id, attributes.seq, 1, None)


def test_a_workflow_reloaded_while_its_start_commits_sees_the_start(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    scheduled = _start(partition)
    committing = partition.take_pending()  # the transaction is under way, not applied
    partition.forget("w")  # evicted: the next message reloads it

    partition.handle(_complete(scheduled), 2_000)

    later = _events(partition.pending)
    assert [type(e.attributes) for e in later][-1] is WorkflowCompleted
    first_ids = [e.event_id for e in _events(committing)]
    assert min(e.event_id for e in later) == max(first_ids) + 1  # no event id written twice


def test_the_store_has_the_whole_history_once_both_transactions_applied(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    scheduled = _start(partition)
    committing = partition.take_pending()
    partition.forget("w")
    partition.handle(_complete(scheduled), 2_000)
    partition.apply_committed(committing, {})
    partition.apply_committed(partition.take_pending(), {})

    stored = [serde.decode_history_event(raw) for raw in partition.store.history("w")]
    assert [e.event_id for e in stored] == list(range(1, len(stored) + 1))
    assert isinstance(stored[-1].attributes, WorkflowCompleted)


def test_a_timer_fired_in_a_committing_transaction_does_not_fire_again(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    _start(partition)  # schedules the activity's 30 s start-to-close timeout timer
    partition.apply_committed(partition.take_pending(), {})
    late = 1_000 + 31_000
    (timeout,) = partition.store.due_timers(late)

    assert partition.fire_due_timers(late) == 1
    committing = partition.take_pending()  # the fire and its tombstone are under way
    assert partition.fire_due_timers(late) == 0

    partition.apply_committed(committing, {})
    assert partition.fire_due_timers(late) == 0
    # What is left is the retry's backoff timer, not the timeout that fired.
    assert timeout.timer_id not in [t.timer_id for t in partition.store.due_timers(2**62)]


def test_an_aborted_transaction_leaves_nothing_staged(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    _start(partition)
    partition.take_pending()
    partition.forget_workflows()  # what the worker does when the transaction aborts

    assert partition.pending.records == []
    assert partition.store.history("w") == []
    partition.take_pending()  # a new transaction can begin
