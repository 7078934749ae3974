"""The topic table of DESIGN.md, and the pure half of validation (``compare``)."""

from __future__ import annotations

import pytest

from topics.admin import ExistingTopic, compare
from topics.catalogue import Catalogue, TopicNames


def test_names_follow_the_namespace() -> None:
    names = TopicNames("acme")
    assert (names.inbox, names.history, names.timers, names.status) == (
        "acme.inbox", "acme.history", "acme.timers", "acme.status",
    )  # fmt: skip
    assert (names.replies, names.inbox_dlq) == ("acme.replies", "acme.inbox.dlq")
    assert names.tasks("payments") == "acme.tasks.payments"
    assert names.is_task_topic("acme.tasks.payments")
    assert not names.is_task_topic("other.tasks.payments")
    assert names.queue_of("acme.tasks.pay.eu") == "pay.eu"


@pytest.mark.parametrize("queue", ["", "a b", "ä", "x/y"])
def test_task_queue_names_must_be_legal_topic_names(queue: str) -> None:
    with pytest.raises(ValueError):
        TopicNames("ns").tasks(queue)


def test_cleanup_policies_follow_the_design() -> None:
    by_name = {spec.name: spec for spec in Catalogue("ns").topics()}
    assert {name: spec.cleanup_policy for name, spec in by_name.items()} == {
        "ns.inbox": "delete",
        "ns.history": "compact",
        "ns.timers": "compact",
        "ns.status": "compact",
        "ns.replies": "delete",
        "ns.inbox.dlq": "delete",
    }
    assert Catalogue("ns").task_queue("q").cleanup_policy == "delete"
    assert int(by_name["ns.replies"].config["retention.ms"]) < int(
        by_name["ns.inbox.dlq"].config["retention.ms"]
    )


def test_owner_topics_share_one_fixed_partition_count() -> None:
    catalogue = Catalogue("ns", partitions=24)
    assert {spec.partitions for spec in catalogue.partitioned} == {24}
    assert all(spec.fixed_partitions for spec in catalogue.partitioned)
    assert not catalogue.task_queue("q").fixed_partitions


def test_replication_factor_three_asks_for_two_in_sync_replicas() -> None:
    spec = Catalogue("ns", replication_factor=3).partitioned[0]
    assert spec.replication_factor == 3
    assert spec.config["min.insync.replicas"] == "2"


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Catalogue("ns", partitions=0)


def _existing(spec_name: str, partitions: int, **config: str) -> ExistingTopic:
    return ExistingTopic(spec_name, partitions, 1, config)


def test_compare_flags_partition_count_and_cleanup_policy_as_fatal() -> None:
    history = Catalogue("ns", 6).partitioned[1]
    same = _existing("ns.history", 6, **history.config)
    assert compare(history, same) == []
    [wrong_count] = compare(history, _existing("ns.history", 3, **history.config))
    assert (wrong_count.setting, wrong_count.expected, wrong_count.actual) == ("partitions", 6, 3)
    assert wrong_count.fatal
    deleting = compare(
        history, _existing("ns.history", 6, **{**history.config, "cleanup.policy": "delete"})
    )
    assert [(m.setting, m.fatal) for m in deleting] == [("cleanup.policy", True)]
    assert "cleanup.policy=delete, but Chronik needs compact" in str(deleting[0].error())


def test_compare_only_warns_about_retention_and_free_partition_counts() -> None:
    replies = Catalogue("ns", 6).topics()[4]
    drift = compare(replies, _existing("ns.replies", 2, **{**replies.config, "retention.ms": "1"}))
    assert drift and not any(m.fatal for m in drift)


def test_compare_reports_a_missing_topic() -> None:
    [missing] = compare(Catalogue("ns").partitioned[0], None)
    assert missing.fatal and str(missing) == "ns.inbox: missing"
