"""The partition store: history by workflow id, the due-timer index, atomic checkpoints."""

from __future__ import annotations

from pathlib import Path

from runtime.store import BACKGROUND_TIMER_PREFIX, PartitionStore, StoreBatch


def _store(tmp_path: Path) -> PartitionStore:
    return PartitionStore(tmp_path / "p0")


def test_history_is_per_workflow_in_event_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    for event_id in (3, 1, 2, 10):
        batch.put_event("wf-a", event_id, f"a{event_id}".encode())
    batch.put_event("wf", 1, b"other")  # a prefix of "wf-a" must not leak into it
    batch.put_event("wf-ab", 1, b"longer")
    store.write(batch)
    assert store.history("wf-a") == [b"a1", b"a2", b"a3", b"a10"]
    assert store.history("wf") == [b"other"]
    assert store.history("missing") == []
    assert list(store.workflow_ids()) == [("wf", b"other"), ("wf-a", b"a10"), ("wf-ab", b"longer")]
    assert [wid for wid, _ in store.workflow_ids(after="wf")] == ["wf-a", "wf-ab"]
    assert store.event_ids("wf-a") == [1, 2, 3, 10]


def test_tombstone_deletes_an_event(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first, second = StoreBatch(), StoreBatch()
    for event_id, record in ((1, b"x"), (2, b"y"), (3, b"z")):
        first.put_event("w", event_id, record)
    store.write(first)
    second.put_event("w", 2, None)
    store.write(second)
    assert store.history("w") == [b"x", b"z"]


def test_a_history_is_deleted_whole(tmp_path: Path) -> None:
    """History GC tombstones every event of a workflow: nothing of it is found after."""
    store = _store(tmp_path)
    first, second = StoreBatch(), StoreBatch()
    for event_id in (1, 2, 3):
        first.put_event("w", event_id, b"e")
        second.put_event("w", event_id, None)
    store.write(first)
    store.write(second)
    assert store.history("w") == []
    assert list(store.workflow_ids()) == []


def test_checkpoints_survive_reopen_and_only_move_forward_within_a_batch(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.checkpoint("ns.history") is None
    batch = StoreBatch()
    batch.put_event("w", 1, b"x")
    batch.checkpoint("ns.history", 41)
    batch.checkpoint("ns.history", 40)
    store.write(batch)
    store.close()
    reopened = _store(tmp_path)
    assert reopened.checkpoint("ns.history") == 41
    assert reopened.history("w") == [b"x"]


def test_due_timers_come_in_fire_order_and_leave_when_removed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    batch.put_timer("w1", "sleep:1", 300, b"t1")
    batch.put_timer("w2", "sleep:1", 100, b"t2")
    batch.put_timer("w3", "sleep:9", 5_000, b"t3")
    store.write(batch)
    assert store.next_fire_at() == 100
    due = store.due_timers(now_ms=1_000)
    assert [(t.workflow_id, t.timer_id, t.fire_at_ms, t.record) for t in due] == [
        ("w2", "sleep:1", 100, b"t2"),
        ("w1", "sleep:1", 300, b"t1"),
    ]
    fired = StoreBatch()
    for timer in due:
        fired.put_timer(timer.workflow_id, timer.timer_id, timer.fire_at_ms, None)
    store.write(fired)
    assert store.due_timers(now_ms=1_000) == []
    assert store.next_fire_at() == 5_000
    assert store.pending_timer_count() == 1


def test_rescheduling_a_timer_moves_it_and_an_earlier_timer_after_a_scan_is_found(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    batch.put_timer("w", "t", 500, b"v1")
    store.write(batch)
    assert store.due_timers(now_ms=600)[0].record == b"v1"
    moved = StoreBatch()
    moved.put_timer("w", "t", 900, b"v2")
    moved.put_timer("w", "early", 50, b"e")
    store.write(moved)
    assert [(t.timer_id, t.fire_at_ms) for t in store.due_timers(now_ms=1_000)] == [
        ("early", 50),
        ("t", 900),
    ]
    assert store.pending_timer_count() == 2


def test_put_then_remove_in_one_batch_leaves_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    batch.put_timer("w", "t", 10, b"v")
    batch.put_timer("w", "t", 10, None)
    store.write(batch)
    assert store.due_timers(now_ms=100) == []
    assert store.pending_timer_count() == 0


def test_next_fire_at_may_be_early_but_never_late(tmp_path: Path) -> None:
    """Kept in memory: a new timer lowers it; a removed one leaves it early until a scan."""
    store = _store(tmp_path)
    first = StoreBatch()
    first.put_timer("w", "late", 100, b"l")
    store.write(first)
    assert store.next_fire_at() == 100
    earlier = StoreBatch()
    earlier.put_timer("w", "early", 50, b"e")
    store.write(earlier)
    assert store.next_fire_at() == 50

    cancelled = StoreBatch()
    cancelled.put_timer("w", "early", 50, None)
    store.write(cancelled)
    assert store.next_fire_at() == 50  # early: the owner wakes up for nothing once
    assert store.due_timers(60) == []
    assert store.next_fire_at() == 100  # that scan found the true next fire time

    (due,) = store.due_timers(100)
    assert store.next_fire_at() == 100  # still there until its fire is applied
    fired = StoreBatch()
    fired.put_timer(due.workflow_id, due.timer_id, due.fire_at_ms, None)
    store.write(fired)
    assert store.due_timers(100) == []
    assert store.next_fire_at() is None


def test_a_reopened_store_finds_its_earliest_timer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    batch.put_timer("w", "t", 700, b"v")
    store.write(batch)
    store.close()
    assert _store(tmp_path).next_fire_at() == 700


def test_background_timers_have_a_due_index_of_their_own(tmp_path: Path) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    batch.put_timer("w", BACKGROUND_TIMER_PREFIX + "retention", 10, b"r")
    batch.put_timer("w", "sleep:1", 20, b"s")
    store.write(batch)

    assert store.next_fire_at() == 10  # the earliest of both
    assert [t.timer_id for t in store.due_timers(30)] == ["sleep:1"]
    assert [t.timer_id for t in store.due_timers(30, background=True)] == ["~retention"]
    moved = StoreBatch()
    moved.put_timer("w", BACKGROUND_TIMER_PREFIX + "retention", 40, b"r2")
    store.write(moved)
    assert store.due_timers(30, background=True) == []  # moved: the old due entry is gone
    assert [t.record for t in store.due_timers(40, background=True)] == [b"r2"]
    store.close()
    reopened = PartitionStore(tmp_path / "p0")
    assert reopened.next_fire_at() == 20


def test_the_fresh_as_of_time_survives_reopen_and_only_moves_forward(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.fresh_as_of() is None  # a new store vouches for nothing
    newer, older = StoreBatch(), StoreBatch()
    newer.mark_fresh(5_000)
    newer.mark_fresh(4_000)  # within a batch, the latest wins too
    store.write(newer)
    older.mark_fresh(3_000)
    older.put_event("w", 1, b"x")
    store.write(older)  # its records land; the time stays
    assert store.fresh_as_of() == 5_000
    store.close()
    reopened = _store(tmp_path)
    assert reopened.fresh_as_of() == 5_000
    assert reopened.history("w") == [b"x"]


def test_reset_empties_the_store_on_disk_and_keeps_it_usable(tmp_path: Path) -> None:
    store = _store(tmp_path)
    batch = StoreBatch()
    batch.put_event("w", 1, b"x")
    batch.put_timer("w", "sleep:1", 10, b"t")
    batch.checkpoint("ns.history", 7)
    batch.mark_fresh(5_000)
    store.write(batch)
    assert store.next_fire_at() == 10

    store.reset()

    assert store.history("w") == []
    assert store.checkpoint("ns.history") is None
    assert store.fresh_as_of() is None
    assert store.next_fire_at() is None
    after = StoreBatch()
    after.put_event("v", 1, b"y")
    store.write(after)
    store.close()
    reopened = _store(tmp_path)
    assert list(reopened.workflow_ids()) == [("v", b"y")]
    assert reopened.checkpoint("ns.history") is None
