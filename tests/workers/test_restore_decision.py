"""When a partition store may resume from its checkpoints, and when it must be rebuilt.

The decision is pure (`workers.restore.rebuild_reason`); `tests/kafka/test_restore.py`
shows the broker's log cleaner really removing the tombstones a stale store would miss.
"""

from __future__ import annotations

import time

import pytest

from topics.admin import TopicAdmin
from topics.errors import KafkaUnavailableError
from workers import restore
from workers.restore import MAX_SAFETY_MARGIN_MS, Rebuild, TopicView, rebuild_reason, usable_age_ms

DAY_MS = 86_400_000
NOW = 10 * DAY_MS


def _history(checkpoint: int | None, log_start: int = 0, retention: int = DAY_MS) -> TopicView:
    return TopicView("ns.history", checkpoint, log_start, retention)


def test_the_usable_age_leaves_an_hour_of_a_day_and_half_of_a_short_retention() -> None:
    assert usable_age_ms(DAY_MS) == DAY_MS - MAX_SAFETY_MARGIN_MS == 23 * 3_600_000
    assert usable_age_ms(600_000) == 300_000
    assert usable_age_ms(100) == 50


def test_a_store_younger_than_the_usable_age_resumes() -> None:
    fresh_as_of = NOW - usable_age_ms(DAY_MS) + 1
    assert rebuild_reason(fresh_as_of, [_history(40)], NOW) is None


def test_a_store_as_old_as_the_usable_age_is_rebuilt() -> None:
    view = _history(40)
    fresh_as_of = NOW - usable_age_ms(DAY_MS)
    assert rebuild_reason(fresh_as_of, [view], NOW) == (Rebuild.STALE, view)


def test_the_shortest_retention_of_the_store_s_topics_decides() -> None:
    history = _history(40)
    timers = TopicView("ns.timers", 3, 0, 600_000)
    an_hour_ago = NOW - 3_600_000
    assert rebuild_reason(an_hour_ago, [history, timers], NOW) == (Rebuild.STALE, timers)


def test_a_checkpoint_below_the_log_start_is_rebuilt_however_fresh() -> None:
    view = _history(40, log_start=41)
    assert rebuild_reason(NOW, [view], NOW) == (Rebuild.BELOW_LOG_START, view)
    assert rebuild_reason(NOW, [_history(41, log_start=41)], NOW) is None


def test_a_store_without_a_fresh_as_of_time_is_rebuilt_once_it_holds_anything() -> None:
    view = _history(40)
    assert rebuild_reason(None, [view], NOW) == (Rebuild.NO_FRESH_AS_OF, view)
    assert rebuild_reason(None, [_history(None)], NOW) is None  # new: read from 0 anyway


def test_a_topic_the_store_never_read_is_no_reason() -> None:
    long_ago = NOW - 5 * DAY_MS
    assert rebuild_reason(long_ago, [_history(None, log_start=7)], NOW) is None


def test_a_checkpoint_past_the_end_of_the_topic_is_rebuilt_however_fresh() -> None:
    """The topic was deleted and created again (or lost records in an unclean leader
    election): the store's offsets name records that are not there, and resuming skipped
    every record of the new topic up to its old checkpoint."""
    view = TopicView("ns.history", 40, 0, DAY_MS, end=2)
    assert rebuild_reason(NOW, [view], NOW) == (Rebuild.BEYOND_END, view)
    caught_up = TopicView("ns.history", 40, 0, DAY_MS, end=40)
    assert rebuild_reason(NOW, [caught_up], NOW) is None


def test_the_topics_configuration_is_asked_again_while_kafka_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore runs during a rebalance; one refusal of describe_configs ended the worker."""
    answers: list[Exception | dict[str, int]] = [
        KafkaUnavailableError("coordinator moving"),
        KafkaUnavailableError("still moving"),
        {"ns.history": 86_400_000},
    ]

    def delete_retention_ms(_admin: object, _topics: list[str]) -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(TopicAdmin, "delete_retention_ms", delete_retention_ms)
    monkeypatch.setattr(time, "sleep", lambda _s: None)

    config = {"bootstrap.servers": "127.0.0.1:1"}
    assert restore._delete_retention(config, ("ns.history",)) == {"ns.history": 86_400_000}
    assert answers == []
