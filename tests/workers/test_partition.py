"""An owned partition: reading its own writes, and where its timers go.

The workflow worker processes the next batch while the previous transaction commits, so
the partition's store lags its staged writes by up to two transactions. These tests drive
`OwnedPartition` with a real RocksDB store and no Kafka: a workflow reloaded in that
window must see its whole history, and a timer fired in that window must not fire again.
Activity deadlines ride on history records (`topics.carried_timers`); the workflow code's
timers go to the timers topic.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from examples.order import noop, one_activity
from runtime import workflow
from runtime.converter import DataConverter
from runtime.engine import Transition, WorkflowInstance, WorkflowRegistry
from runtime.events import (
    ActivityScheduled,
    HistoryEvent,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowTerminated,
)
from runtime.messages import (
    ActivityCompletedReport,
    CancelActivityTask,
    CancelWorkflow,
    DescribeWorkflow,
    FetchHistory,
    GetWorkflowResult,
    HistoryPage,
    IdReusePolicy,
    InboxMessage,
    Reply,
    RequestFailed,
    StartWorkflow,
    TerminateWorkflow,
    TimerFiredReport,
    WorkflowOutcome,
    WorkflowStatus,
)
from runtime.store import DueTimer, PartitionStore
from topics import carried_timers, serde
from topics.catalogue import TopicNames
from workers.partition import (
    RETENTION_TIMER,
    Outbound,
    OwnedPartition,
    PendingWrites,
    RecordTooLargeError,
)
from workers.restore import FRESH_AS_OF_EVERY_MS

NAMES = TopicNames("t")


@workflow.defn
async def nap() -> None:
    await workflow.sleep(timedelta(seconds=5))


def _partition(
    tmp_path: Path, *, fires_timers: bool = True, retention_ms: int = 7 * 86_400_000
) -> OwnedPartition:
    registry = WorkflowRegistry([one_activity, nap])
    store = PartitionStore(tmp_path / "p0")
    return OwnedPartition(
        0,
        store,
        registry,
        NAMES,
        cache_size=10,
        fires_timers=fires_timers,
        retention_ms=retention_ms,
    )


def _on(topic: str, pending: PendingWrites) -> list[Outbound]:
    return [record for record in pending.records if record.topic == topic]


def _carried(pending: PendingWrites) -> list[carried_timers.TimerChange]:
    """The timer changes the transaction's history records carry, in order."""
    return [
        change
        for record in _on(NAMES.history, pending)
        for change in carried_timers.changes(record.headers)
    ]


def _events(pending: PendingWrites) -> list[HistoryEvent]:
    return [
        serde.decode_history_event(record.value)
        for record in pending.records
        if record.topic == NAMES.history and record.value is not None
    ]


def _start(partition: OwnedPartition, now_ms: int = 1_000) -> HistoryEvent:
    """Start one_activity as "w"; return its ActivityScheduled event."""
    return _start_as(partition, "w", now_ms)


def _start_as(partition: OwnedPartition, workflow_id: str, now_ms: int = 1_000) -> HistoryEvent:
    """Start one_activity as ``workflow_id``; return its ActivityScheduled event."""
    start = StartWorkflow(workflow_id, "one_activity", "q", (), f"request-{workflow_id}")
    partition.handle(start, now_ms)
    scheduled = [
        e for e in _events(partition.pending) if isinstance(e.attributes, ActivityScheduled)
    ]
    assert len(scheduled) == 1
    return scheduled[0]


def _complete(scheduled: HistoryEvent, workflow_id: str = "w") -> ActivityCompletedReport:
    attributes = scheduled.attributes
    assert isinstance(attributes, ActivityScheduled)
    return ActivityCompletedReport(workflow_id, scheduled.run_id, attributes.seq, 1, None)


def test_an_activity_cancellation_is_written_to_every_task_partition(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    scheduled = _start(partition)
    (task,) = _on(NAMES.tasks("q"), partition.take_pending())
    assert not task.every_partition  # a task goes to one partition, whichever

    partition.handle(CancelWorkflow("w", scheduled.run_id, "enough", "request-cancel"), 2_000)
    (cancel,) = _on(NAMES.tasks("q"), partition.pending)
    assert cancel.every_partition and cancel.key == task.key
    assert isinstance(serde.decode_task(cancel.value or b""), CancelActivityTask)


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


def test_a_closed_workflow_leaves_memory_and_is_answered_from_the_store(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    scheduled = _start(partition)
    assert partition.caches("w")  # running
    partition.handle(_complete(scheduled), 2_000)
    assert not partition.caches("w")  # closed, nobody waiting: no full GC walks it again

    partition.handle(GetWorkflowResult("w", None, "r-9", "c"), 3_000)  # before the apply

    [reply] = _replies(partition.pending)
    assert isinstance(reply.body, WorkflowOutcome)
    assert reply.body.status == WorkflowStatus.COMPLETED


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


def test_an_activity_deadline_rides_on_history_and_never_on_the_timers_topic(
    tmp_path: Path,
) -> None:
    partition = _partition(tmp_path)
    scheduled = _start(partition, now_ms=1_000)
    started = partition.take_pending()

    assert _on(NAMES.timers, started) == []
    [(workflow_id, timer_id, fire_at, record)] = _carried(started)
    assert (workflow_id, timer_id, fire_at) == ("w", "activity:1:1:start_to_close", 31_000)
    assert record is not None
    assert _on(NAMES.history, started)[-1].headers  # the transition's last record carries it
    partition.apply_committed(started, {})
    assert [t.timer_id for t in partition.store.due_timers(31_000)] == [timer_id]

    partition.handle(_complete(scheduled), 2_000)
    completed = partition.take_pending()

    assert _on(NAMES.timers, completed) == []
    assert _carried(completed)[0] == ("w", timer_id, 0, None)  # then the retention timer
    partition.apply_committed(completed, {})
    assert partition.store.due_timers(2**62) == []
    assert [t.timer_id for t in _retentions(partition)] == [RETENTION_TIMER]


def test_a_fired_deadline_is_cleared_by_the_history_its_fire_writes(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    _start(partition)
    partition.apply_committed(partition.take_pending(), {})

    assert partition.fire_due_timers(1_000 + 31_000) == 1
    fired = partition.take_pending()

    assert _on(NAMES.timers, fired) == []
    changes = _carried(fired)
    assert ("w", "activity:1:1:start_to_close", 0, None) in changes  # cleared
    assert any(change[1].startswith("retry:") for change in changes)  # the retry's backoff


def test_the_workflow_codes_timers_go_to_the_timers_topic(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    partition.handle(StartWorkflow("n", "nap", "q", (), "request-1"), 1_000)
    pending = partition.take_pending()

    [timer] = _on(NAMES.timers, pending)
    assert serde.decode_timer(timer.value or b"").fire_at_ms == 6_000
    assert _carried(pending) == []
    partition.apply_committed(pending, {})
    assert [t.workflow_id for t in partition.store.due_timers(6_000)] == ["n"]


def test_an_owner_that_leaves_timers_to_the_timer_service_keeps_only_deadlines(
    tmp_path: Path,
) -> None:
    partition = _partition(tmp_path, fires_timers=False)
    partition.handle(StartWorkflow("n", "nap", "q", (), "request-1"), 1_000)
    _start(partition)
    pending = partition.take_pending()
    partition.apply_committed(pending, {NAMES.timers: 7, NAMES.history: 9})

    assert len(_on(NAMES.timers, pending)) == 1  # the nap, for `chronik timers` to fire
    assert [t.workflow_id for t in partition.store.due_timers(2**62)] == ["w"]  # the deadline
    assert partition.store.checkpoint(NAMES.timers) is None  # it holds none of that topic
    assert partition.store.checkpoint(NAMES.history) == 10


def _napping(tmp_path: Path) -> tuple[OwnedPartition, TimerFiredReport]:
    """An owner that leaves timers to `chronik timers`, with "n" asleep; and the fire the
    service sends when the nap is due."""
    partition = _partition(tmp_path, fires_timers=False)
    partition.handle(StartWorkflow("n", "nap", "q", (), "request-1"), 1_000)
    [nap] = [serde.decode_timer(r.value or b"") for r in _on(NAMES.timers, partition.pending)]
    partition.apply_committed(partition.take_pending(), {})
    return partition, TimerFiredReport("n", nap.run_id, nap.timer_id, nap.fire_at_ms)


def _clears_only(pending: PendingWrites, workflow_id: str, timer_id: str) -> bool:
    """Whether the transaction's one write to the timers topic tombstones that timer."""
    key = serde.encode_timer_key(workflow_id, timer_id)
    return [(r.key, r.value) for r in _on(NAMES.timers, pending)] == [(key, None)]


def test_a_fire_from_the_timer_service_is_cleared_by_the_owner_once_taken(
    tmp_path: Path,
) -> None:
    partition, fire = _napping(tmp_path)

    partition.handle(fire, fire.fire_at_ms)  # the service fired it: the workflow takes it

    assert any(isinstance(e.attributes, WorkflowCompleted) for e in _events(partition.pending))
    assert _clears_only(partition.pending, "n", fire.timer_id)


def _end_the_nap(partition: OwnedPartition, fire: TimerFiredReport, how: str) -> str:
    """End "n"'s nap ``how``, everything applied; return the workflow id the fire is for."""
    match how:
        case "fired before":  # a duplicate: the service restarted before the clear came
            partition.handle(fire, fire.fire_at_ms)
        case "terminated":
            partition.handle(TerminateWorkflow("n", None, "enough", "request-2"), 2_000)
        case "collected":  # retention ended: the owner knows no run of the id any more
            return "collected"
    partition.apply_committed(partition.take_pending(), {})
    return "n"


@pytest.mark.parametrize("how", ["fired before", "terminated", "collected"])
def test_a_fire_from_the_timer_service_the_workflow_ignores_is_cleared_too(
    tmp_path: Path, how: str
) -> None:
    """A stale fire records nothing, and used to clear nothing: its timer stayed on the
    compacted topic, and every rebuild of the service's store fired it once more."""
    partition, fire = _napping(tmp_path)
    workflow_id = _end_the_nap(partition, fire, how)
    stale = TimerFiredReport(workflow_id, fire.run_id, fire.timer_id, fire.fire_at_ms)

    partition.handle(stale, fire.fire_at_ms + 1)

    assert _events(partition.pending) == []
    assert _clears_only(partition.pending, workflow_id, fire.timer_id)


def test_a_stale_fire_keeps_the_timer_a_later_run_set_on_its_key(tmp_path: Path) -> None:
    """Run 1's fire, sent before the service read run 2's timer on the same key: clearing
    the key would delete run 2's."""
    partition, fire = _napping(tmp_path)
    policy = IdReusePolicy.TERMINATE_IF_RUNNING
    partition.handle(StartWorkflow("n", "nap", "q", (), "request-2", policy), 2_000)
    restarted = partition.take_pending()
    partition.apply_committed(restarted, {})

    partition.handle(fire, fire.fire_at_ms)

    [run_2s_nap] = [serde.decode_timer(r.value or b"") for r in _on(NAMES.timers, restarted)]
    assert run_2s_nap.run_id != fire.run_id
    assert _on(NAMES.timers, partition.take_pending()) == []


# --- retention ----------------------------------------------------------------------------

RETENTION_MS = 20_000  # shorter than an activity deadline (30 s): those fire later


def _closed_at_2000(tmp_path: Path, **kwargs: bool) -> OwnedPartition:
    """ "w" (one_activity) closed at t=2,000, everything applied to the store."""
    partition = _partition(tmp_path, retention_ms=RETENTION_MS, **kwargs)
    scheduled = _start(partition)
    partition.apply_committed(partition.take_pending(), {})
    partition.handle(_complete(scheduled), 2_000)
    partition.apply_committed(partition.take_pending(), {})
    return partition


def _retentions(partition: OwnedPartition) -> list[DueTimer]:
    """The retention timers in the store (background timers: a due index of their own)."""
    return partition.store.due_timers(2**62, background=True)


def _start_again(workflow_id: str) -> StartWorkflow:
    """A second run for a closed workflow's id."""
    policy = IdReusePolicy.ALLOW_DUPLICATE
    return StartWorkflow(workflow_id, "one_activity", "q", (), "request-2", id_reuse_policy=policy)


def test_a_close_sets_the_retention_timer_on_its_last_history_record(tmp_path: Path) -> None:
    partition = _partition(tmp_path, retention_ms=RETENTION_MS)
    scheduled = _start(partition)
    started = partition.take_pending()
    assert RETENTION_TIMER not in {change[1] for change in _carried(started)}  # running
    partition.apply_committed(started, {})
    partition.handle(_complete(scheduled), 2_000)
    completed = partition.take_pending()

    (*_, last) = _on(NAMES.history, completed)
    (*_, (workflow_id, timer_id, fire_at, record)) = carried_timers.changes(last.headers)
    assert (workflow_id, timer_id, fire_at) == ("w", RETENTION_TIMER, 2_000 + RETENTION_MS)
    assert record is not None and serde.decode_timer(record).timer_id == RETENTION_TIMER
    assert _on(NAMES.timers, completed) == []  # even for an owner that fires every timer


def test_the_retention_timer_tombstones_history_and_status_and_clears_itself(
    tmp_path: Path,
) -> None:
    partition = _closed_at_2000(tmp_path)
    events = len(partition.store.history("w"))

    assert partition.fire_due_timers(2_000 + RETENTION_MS - 1) == 0  # not yet
    assert partition.fire_due_timers(2_000 + RETENTION_MS) == 1
    collected = partition.take_pending()

    history = _on(NAMES.history, collected)
    assert len(history) == events and all(r.value is None for r in history)
    assert carried_timers.changes(history[-1].headers) == [("w", RETENTION_TIMER, 0, None)]
    [status] = _on(NAMES.status, collected)
    assert status.value is None and status.partition == 0
    partition.apply_committed(collected, {})
    assert partition.store.history("w") == []
    assert _retentions(partition) == []
    partition.handle(FetchHistory("w", None, "r-5", "c"), 2_000 + RETENTION_MS)
    [reply] = _replies(partition.take_pending())
    assert isinstance(reply.body, RequestFailed)  # the workflow is gone: not found
    assert reply.body.failure.type == "WorkflowNotFoundError"


def test_a_retention_timer_that_finds_the_retention_grew_waits_for_the_new_end(
    tmp_path: Path,
) -> None:
    partition = _closed_at_2000(tmp_path)
    partition.retention_ms = 10 * RETENTION_MS  # the worker restarted with a longer one

    assert partition.fire_due_timers(2_000 + RETENTION_MS) == 0
    moved = partition.take_pending()
    assert moved.records == []  # nothing written: the store alone keeps the later time
    partition.apply_committed(moved, {})
    assert [t.fire_at_ms for t in _retentions(partition)] == [2_000 + 10 * RETENTION_MS]
    assert partition.store.history("w") != []


def test_a_retention_timer_of_a_reused_id_with_a_running_run_is_dropped(tmp_path: Path) -> None:
    partition = _closed_at_2000(tmp_path)
    partition.handle(_start_again("w"), 3_000)
    partition.apply_committed(partition.take_pending(), {})  # a second run, running

    assert partition.fire_due_timers(2_000 + RETENTION_MS) == 0
    dropped = partition.take_pending()
    assert [r for r in dropped.records if r.topic != NAMES.tasks("q")] == []
    partition.apply_committed(dropped, {})
    assert _retentions(partition) == []
    assert partition.store.history("w") != []


def test_a_retention_timer_waits_while_an_unapplied_transaction_wrote_to_the_workflow(
    tmp_path: Path,
) -> None:
    partition = _closed_at_2000(tmp_path)
    partition.handle(_start_again("w"), 3_000)
    # The new run's start is staged, not applied: the stored history still ends closed.

    assert partition.fire_due_timers(2_000 + RETENTION_MS) == 0
    assert all(r.value is not None for r in _on(NAMES.history, partition.pending))


def test_a_backlog_of_retention_ends_never_delays_a_due_deadline(tmp_path: Path) -> None:
    partition = _partition(tmp_path, retention_ms=RETENTION_MS)
    for n in range(5):  # five closed workflows whose retention ends at the same time
        scheduled = _start_as(partition, f"closed-{n}")
        partition.apply_committed(partition.take_pending(), {})
        partition.handle(_complete(scheduled, f"closed-{n}"), 2_000)
        partition.apply_committed(partition.take_pending(), {})
    _start_as(partition, "running", now_ms=3_000)  # its deadline: 33,000
    partition.apply_committed(partition.take_pending(), {})

    # Due at 40,000: the deadline (33,000) and five retention ends (22,000), earlier ones.
    assert partition.fire_due_timers(40_000, limit=1, retention_limit=2) == 3
    fired = partition.take_pending()
    events = _events(fired)
    assert {e.workflow_id for e in events} == {"running"}  # the deadline's fire and retry
    assert len({r.key for r in _on(NAMES.status, fired) if r.value is None}) == 2
    partition.apply_committed(fired, {})
    assert len(_retentions(partition)) == 3  # the rest wait for the next steps


# --- records Kafka would refuse ----------------------------------------------------------

LIMIT = 2_000


@workflow.defn
async def returns(size: int) -> str:
    return "x" * size


@workflow.defn
async def returns_after_an_activity(size: int) -> str:
    await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))
    return "x" * size


def _small_partition(tmp_path: Path, limit: int = LIMIT) -> OwnedPartition:
    registry = WorkflowRegistry([returns, returns_after_an_activity])
    store = PartitionStore(tmp_path / "p0")
    return OwnedPartition(0, store, registry, NAMES, max_record_bytes=limit)


def _start_big(workflow_type: str, arg: object, reply_to: str | None = "c") -> StartWorkflow:
    args = DataConverter().encode([arg])
    return StartWorkflow(
        "big", workflow_type, "q", args, "r-1", reply_to=reply_to, await_result=True
    )


def _replies(pending: PendingWrites) -> list[Reply]:
    return [serde.decode_reply(r.value or b"") for r in _on(NAMES.replies, pending)]


def test_a_run_whose_transition_is_too_large_is_terminated_saying_why(tmp_path: Path) -> None:
    partition = _small_partition(tmp_path)
    partition.handle(_start_big("returns_after_an_activity", 5_000), 1_000)
    [scheduled] = [
        e for e in _events(partition.pending) if isinstance(e.attributes, ActivityScheduled)
    ]
    partition.apply_committed(partition.take_pending(), {})

    partition.handle(_complete(scheduled, "big"), 2_000)  # the result is too large
    pending = partition.take_pending()

    assert all(len(r.key) + len(r.value or b"") <= LIMIT for r in pending.records)
    events = _events(pending)
    assert [type(e.attributes) for e in events] == [WorkflowTerminated]
    terminated = events[0].attributes
    assert isinstance(terminated, WorkflowTerminated)
    assert "WorkflowCompleted event is" in terminated.reason
    assert "the limit is 2,000" in terminated.reason
    [reply] = _replies(pending)  # the caller waiting for the result hears at once
    assert isinstance(reply.body, WorkflowOutcome)
    assert reply.body.status == WorkflowStatus.TERMINATED


def test_a_start_whose_first_task_is_too_large_is_refused_to_its_sender(tmp_path: Path) -> None:
    partition = _small_partition(tmp_path)

    with pytest.raises(RecordTooLargeError, match="WorkflowCompleted event is"):
        partition.handle(_start_big("returns", 5_000), 1_000)  # the worker dead-letters it

    pending = partition.take_pending()
    assert _events(pending) == []  # no run was recorded
    [reply] = _replies(pending)
    assert isinstance(reply.body, RequestFailed)
    assert reply.body.failure.type == "RecordTooLarge"


def _fetch(partition: OwnedPartition, after: int, request_id: str, client: str = "c") -> Reply:
    partition.handle(FetchHistory("big", None, request_id, client, after), 2_000)
    [reply] = [r for r in _replies(partition.pending) if r.request_id == request_id]
    return reply


def test_a_history_larger_than_a_record_is_answered_in_pages(tmp_path: Path) -> None:
    partition = _small_partition(tmp_path)
    partition.handle(_start_big("returns", 1_800), 1_000)  # two events: 2,003 bytes together
    whole = _events(partition.pending)
    partition.apply_committed(partition.take_pending(), {})

    first = _fetch(partition, 0, "r-2")
    assert isinstance(first.body, HistoryPage)
    assert first.body.more
    assert first.body.events == tuple(whole[:1])
    second = _fetch(partition, first.body.events[-1].event_id, "r-3")
    assert second.body == HistoryPage(tuple(whole[1:]), more=False)
    assert all(len(r.key) + len(r.value or b"") <= LIMIT for r in partition.pending.records)


def test_an_answer_too_large_to_send_is_answered_with_why(tmp_path: Path) -> None:
    partition = _small_partition(tmp_path)
    partition.handle(_start_big("returns", 1_500), 1_000)
    partition.apply_committed(partition.take_pending(), {})
    client = "c" * 400  # the reply's key: the page of one event fits in a record, not in a reply
    started = _fetch(partition, 0, "r-2", client)
    assert isinstance(started.body, HistoryPage)
    assert started.body.more

    reply = _fetch(partition, started.body.events[-1].event_id, "r-3", client)

    assert isinstance(reply.body, RequestFailed)
    assert reply.body.failure.type == "RecordTooLarge"
    assert "the limit is 2,000" in reply.body.failure.message


def test_the_limit_counts_a_history_records_key_as_well(tmp_path: Path) -> None:
    roomy = _small_partition(tmp_path / "roomy", limit=10_000)
    roomy.handle(_start_big("returns", 1_000), 1_000)
    completed = _on(NAMES.history, roomy.pending)[-1]
    value_only = len(completed.value or b"")  # the WorkflowCompleted record without its key

    tight = _small_partition(tmp_path / "tight", limit=value_only)
    with pytest.raises(RecordTooLargeError, match="WorkflowCompleted event is"):
        tight.handle(_start_big("returns", 1_000), 1_000)


def test_the_limit_counts_the_timers_a_history_record_carries(tmp_path: Path) -> None:
    roomy = _small_partition(tmp_path / "roomy", limit=10_000)
    roomy.handle(_start_big("returns", 1_000), 1_000)
    completed = _on(NAMES.history, roomy.pending)[-1]
    assert completed.headers  # the retention timer rides on the close
    without_headers = len(completed.key) + len(completed.value or b"")

    tight = _small_partition(tmp_path / "tight", limit=without_headers)
    with pytest.raises(RecordTooLargeError, match="WorkflowCompleted event is"):
        tight.handle(_start_big("returns", 1_000), 1_000)
    assert not tight.take_pending().store  # nothing staged for the store either


def test_callers_that_stopped_asking_no_longer_pin_their_workflows(tmp_path: Path) -> None:
    partition = OwnedPartition(
        0,
        PartitionStore(tmp_path / "p0"),
        WorkflowRegistry([nap]),
        NAMES,
        cache_size=1,
        waiter_lease_ms=60_000,
    )
    for name in ("a", "b", "c"):  # each awaited by a client that then went away
        partition.handle(
            StartWorkflow(name, "nap", "q", (), f"r-{name}", reply_to="client", await_result=True),
            1_000,
        )
    assert all(partition.caches(name) for name in "abc")  # waiters outweigh the cache size

    partition.handle(
        StartWorkflow("c", "nap", "q", (), "r-c", reply_to="client", await_result=True), 50_000
    )
    assert partition.expire_waiters(61_001) == 2  # a and b; c re-asked at 50,000

    assert [name for name in "abc" if partition.caches(name)] == ["c"]


def test_the_cache_keeps_the_workflows_used_last(tmp_path: Path) -> None:
    registry = WorkflowRegistry([nap])
    partition = OwnedPartition(0, PartitionStore(tmp_path / "p0"), registry, NAMES, cache_size=2)
    for name in ("a", "b"):
        partition.handle(StartWorkflow(name, "nap", "q", (), f"r-{name}"), 1_000)
    partition.handle(DescribeWorkflow("a", None, "r-d", "client"), 2_000)  # "a" used last

    partition.handle(StartWorkflow("c", "nap", "q", (), "r-c"), 3_000)

    assert [name for name in "abc" if partition.caches(name)] == ["a", "c"]


@workflow.defn
async def ticker(n: int) -> int:
    """The periodic pattern: sleep, then continue as new (each run sleeps on "sleep:1")."""
    await workflow.sleep(timedelta(seconds=5))
    if n < 3:
        workflow.continue_as_new(n + 1)
    return n


def _ticking(tmp_path: Path) -> OwnedPartition:
    registry = WorkflowRegistry([ticker])
    partition = OwnedPartition(0, PartitionStore(tmp_path / "p0"), registry, NAMES, cache_size=10)
    start = StartWorkflow("tick", "ticker", "q", DataConverter().encode([1]), "r-1")
    partition.handle(start, 1_000)
    partition.apply_committed(partition.take_pending(), {})
    return partition


def test_the_next_runs_sleep_survives_the_fire_that_continued_as_new(tmp_path: Path) -> None:
    partition = _ticking(tmp_path)
    [first] = partition.store.due_timers(2**62)

    assert partition.fire_due_timers(first.fire_at_ms) == 1  # run 1 wakes, continues as new
    fired = partition.take_pending()
    assert any(isinstance(e.attributes, WorkflowContinuedAsNew) for e in _events(fired))
    timer_records = _on(NAMES.timers, fired)
    partition.apply_committed(fired, {})

    # Same key (workflow id + "sleep:1"): the topic and the store end with run 2's timer.
    assert timer_records[-1].value is not None
    [second] = partition.store.due_timers(2**62)
    assert second.fire_at_ms > first.fire_at_ms


def test_an_engine_error_on_a_timer_fire_drops_that_timer_not_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partition = _ticking(tmp_path)
    handle = WorkflowInstance.handle

    def failing(self: WorkflowInstance, message: InboxMessage, now_ms: int) -> Transition:
        if isinstance(message, TimerFiredReport):
            raise RuntimeError("an engine bug")
        return handle(self, message, now_ms)

    monkeypatch.setattr(WorkflowInstance, "handle", failing)

    assert partition.fire_due_timers(10_000) == 0  # logged, not raised
    partition.apply_committed(partition.take_pending(), {})
    assert partition.store.due_timers(2**62) == []  # it does not fail every later step


def test_a_commit_makes_the_store_fresh_as_of_when_its_transaction_was_taken(
    tmp_path: Path,
) -> None:
    """Fresh as of the take, not the commit: records of a later writer follow the take."""
    partition = _partition(tmp_path)
    _start(partition)
    taken = partition.take_pending(5_000)
    assert partition.store.fresh_as_of() is None  # not before the commit
    partition.apply_committed(taken, {NAMES.history: 9})
    assert partition.store.fresh_as_of() == 5_000


def test_a_partition_a_transaction_wrote_nothing_to_is_fresh_too_written_now_and_then(
    tmp_path: Path,
) -> None:
    """Every transaction fences every owned partition, so a commit proves the partition
    idle since; its store is told at most `FRESH_AS_OF_EVERY_MS` late, and on close."""
    partition = _partition(tmp_path)
    partition.apply_committed(partition.take_pending(1_000), {})
    assert partition.store.fresh_as_of() == 1_000  # a store vouching for nothing learns now
    partition.apply_committed(partition.take_pending(1_000 + FRESH_AS_OF_EVERY_MS - 1), {})
    assert partition.store.fresh_as_of() == 1_000  # no write for an idle partition yet
    partition.apply_committed(partition.take_pending(1_000 + FRESH_AS_OF_EVERY_MS), {})
    assert partition.store.fresh_as_of() == 1_000 + FRESH_AS_OF_EVERY_MS
    partition.apply_committed(partition.take_pending(90_000), {})
    partition.close()
    assert PartitionStore(tmp_path / "p0").fresh_as_of() == 90_000


def test_an_aborted_transaction_proves_nothing(tmp_path: Path) -> None:
    partition = _partition(tmp_path)
    _start(partition)
    partition.take_pending(5_000)
    partition.forget_workflows()  # aborted: never applied
    partition.close()
    assert PartitionStore(tmp_path / "p0").fresh_as_of() is None
