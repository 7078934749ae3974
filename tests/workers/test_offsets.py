"""Commit points of out-of-order task completion (workers.offsets)."""

from __future__ import annotations

from workers.offsets import PartitionProgress


def test_commit_point_waits_for_the_lowest_running_offset() -> None:
    progress = PartitionProgress()
    for offset in (5, 6, 7):
        progress.started(offset)
    assert progress.commit_point() == 5
    progress.finished(7)
    assert progress.commit_point() is None  # 5 still runs: nothing new to commit
    progress.finished(5)
    assert progress.commit_point() == 6
    progress.finished(6)
    assert progress.commit_point() == 8
    assert progress.in_flight == 0
    assert progress.commit_point() is None


def test_nothing_to_commit_before_any_task() -> None:
    assert PartitionProgress().commit_point() is None


def test_a_refused_commit_is_offered_again_unless_a_later_point_covers_it() -> None:
    progress = PartitionProgress()
    progress.started(5)
    progress.finished(5)
    assert progress.commit_point() == 6
    progress.commit_failed(6)
    assert progress.commit_point() == 6  # offered again, though nothing moved
    progress.started(6)
    progress.finished(6)
    assert progress.commit_point() == 7
    progress.commit_failed(6)  # an older refusal: 7 covers it
    assert progress.commit_point() is None
