"""Restoring partition stores from the topics, against a real broker.

A worker given several partitions restores them through one consumer; each store must end
up with exactly its partition's records (tombstones applied, transaction markers skipped)
and checkpoints from which a later restore reads only what came after.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from structlog.testing import capture_logs

from runtime.messages import DurableTimer
from runtime.store import PartitionStore, StoreBatch
from tests.kafka.topic_config import admin, set_topic_config
from topics import carried_timers, serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers import restore as restore_module
from workers.restore import Rebuild, RestoreError, TopicView, restore_partitions

PARTITIONS = 3


def _transaction(
    config: dict[str, str],
    topic: str,
    records: list[tuple[int, bytes, bytes | None]],
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Records ``(partition, key, value)`` on ``topic`` in one committed transaction."""
    producer = Producer(
        {**producer_config(config), "transactional.id": f"restore-test-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for partition, key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition, headers=headers)
    producer.commit_transaction(30)


def _write(
    config: dict[str, str],
    names: TopicNames,
    records: list[tuple[int, str, int, bytes | None]],
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """History records ``(partition, workflow id, event id, value)`` in one transaction;
    ``headers`` on each."""
    keyed = [(p, serde.encode_history_key(w, e), value) for p, w, e, value in records]
    _transaction(config, names.history, keyed, headers)


def _stores(tmp_path: Path, run: str) -> dict[int, PartitionStore]:
    return {p: PartitionStore(tmp_path / run / f"partition-{p}") for p in range(PARTITIONS)}


def test_partitions_restore_together_and_resume_from_their_checkpoints(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(
        kafka_config,
        names,
        [(0, "a", 1, b"a1"), (0, "a", 2, b"a2"), (1, "b", 1, b"b1"), (0, "c", 1, b"c1")],
    )
    _write(kafka_config, names, [(0, "c", 1, None)])  # history GC of c: a tombstone

    stores = _stores(tmp_path, "first")
    stats = restore_partitions(kafka_config, names, stores, topics=(names.history,))

    assert {s.partition: s.history_records for s in stats} == {0: 4, 1: 1, 2: 0}
    assert stores[0].history("a") == [b"a1", b"a2"]
    assert stores[0].history("c") == []
    assert stores[1].history("b") == [b"b1"]
    assert list(stores[2].workflow_ids()) == []
    assert stores[2].checkpoint(names.history) is None  # nothing read, nothing claimed

    _write(kafka_config, names, [(1, "b", 2, b"b2"), (2, "d", 1, b"d1")])
    again = restore_partitions(kafka_config, names, stores, topics=(names.history,))

    assert {s.partition: s.history_records for s in again} == {0: 0, 1: 1, 2: 1}
    assert [s.rebuilt for s in again] == [None] * PARTITIONS  # well within the retention
    assert stores[1].history("b") == [b"b1", b"b2"]
    assert stores[2].history("d") == [b"d1"]
    for store in stores.values():
        store.close()


def test_activity_deadlines_carried_by_history_are_restored_with_it(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    deadline = DurableTimer("a", "run", "activity:1:1:start_to_close", 31_000)
    done = DurableTimer("b", "run", "activity:1:1:start_to_close", 32_000)
    _write(kafka_config, names, [(0, "a", 1, b"a1")], [carried_timers.set_header(deadline)])
    _write(kafka_config, names, [(0, "b", 1, b"b1")], [carried_timers.set_header(done)])
    _write(
        kafka_config,
        names,
        [(0, "b", 2, b"b2")],
        [carried_timers.clear_header("b", done.timer_id)],
    )

    stores = _stores(tmp_path, "deadlines")
    restore_partitions(kafka_config, names, stores, topics=(names.history,))

    due = stores[0].due_timers(2**62)
    assert [(t.workflow_id, t.timer_id, t.fire_at_ms) for t in due] == [
        ("a", deadline.timer_id, 31_000)
    ]
    assert serde.decode_timer(due[0].record) == deadline
    assert stores[0].history("b") == [b"b1", b"b2"]
    for store in stores.values():
        store.close()


def test_timers_restore_from_their_topic_tombstones_included(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    kept = DurableTimer("a", "run", "sleep:1", 5_000)
    fired = DurableTimer("a", "run", "sleep:2", 6_000)
    fired_key = serde.encode_timer_key("a", fired.timer_id)
    _transaction(
        kafka_config,
        names.timers,
        [
            (1, serde.encode_timer_key("a", kept.timer_id), serde.encode_timer(kept)),
            (1, fired_key, serde.encode_timer(fired)),
            (1, fired_key, None),  # fired: its tombstone
        ],
    )

    stores = _stores(tmp_path, "timers")
    stats = restore_partitions(kafka_config, names, stores, topics=(names.timers,))

    assert {s.partition: s.timer_records for s in stats} == {0: 0, 1: 3, 2: 0}
    assert [(t.timer_id, t.fire_at_ms) for t in stores[1].due_timers(2**62)] == [("sleep:1", 5_000)]
    assert stores[1].checkpoint(names.timers) == 4  # the end: past the commit marker
    for store in stores.values():
        store.close()


def test_a_history_record_that_does_not_decode_stops_the_restore_saying_where(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(kafka_config, names, [(0, "a", 1, b"a1")], [(carried_timers.SET, b"not avro")])

    stores = _stores(tmp_path, "broken")
    with pytest.raises(RestoreError, match=rf"{names.history}\[0\]@0: a timer header"):
        restore_partitions(kafka_config, names, stores, topics=(names.history,))
    assert stores[0].checkpoint(names.history) is None  # nothing claimed past the bad record
    for store in stores.values():
        store.close()


# --- stores that missed what the topic no longer holds -------------------------------------


def _delete_records(config: dict[str, str], below: TopicPartition) -> None:
    """DeleteRecords below ``below``, once the broker applies the ``delete`` policy just
    set: the partition's leader learns the topic's new configuration a moment after the
    change was acknowledged, and refuses with POLICY_VIOLATION until then."""
    client = admin(config)
    deadline = time.monotonic() + 30
    while True:
        try:
            for future in client.delete_records([below]).values():
                future.result()
            return
        except KafkaException as error:
            if error.args[0].code() != KafkaError.POLICY_VIOLATION or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _read_keys(config: dict[str, str], topic: str, partition: int) -> list[tuple[str, int]]:
    """The history keys ``topic[partition]`` holds now, tombstones included, in order."""
    consumer = Consumer(
        {
            **config,
            "group.id": "unused",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    where = TopicPartition(topic, partition)
    _, high = consumer.get_watermark_offsets(where, timeout=10)
    consumer.assign([TopicPartition(topic, partition, 0)])
    keys: list[tuple[str, int]] = []
    deadline = time.monotonic() + 30
    while consumer.position([where])[0].offset < high and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is None:
                key = serde.decode_history_key(message.key() or b"")
                keys.append((key.workflow_id, key.event_id))
    consumer.close()
    return keys


def _until_cleaned(config: dict[str, str], names: TopicNames, gone: set[tuple[str, int]]) -> None:
    """Write filler to ``history[0]`` (rolling segments for the cleaner) until no record of
    the keys ``gone`` is left there, their tombstones included."""
    producer = Producer(producer_config(config))
    deadline, filler = time.monotonic() + 120, 0
    while gone & set(_read_keys(config, names.history, 0)):
        assert time.monotonic() < deadline, "the log cleaner did not remove the tombstones"
        filler += 1
        producer.produce(
            names.history, key=serde.encode_history_key("filler", filler), value=b"f", partition=0
        )
        producer.flush(10)
        time.sleep(0.3)


def test_a_store_away_longer_than_tombstones_last_is_rebuilt_and_mixes_no_runs(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    """The log cleaner removes tombstones ``delete.retention.ms`` after it first saw them.

    A store that resumes from a checkpoint older than that never sees the tombstones of
    a history collected meanwhile. Here the workflow id is started again after its
    retention ended, so the new run's history begins at event 1 again: resumed, the store
    would hold the new run's first event followed by the old run's later ones.
    """
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    set_topic_config(
        kafka_config,
        names.history,
        delete_retention_ms="100",
        segment_ms="100",
        min_cleanable_dirty_ratio="0.01",
    )
    first_run: list[tuple[int, str, int, bytes | None]] = [
        (0, "w", event_id, f"run1-e{event_id}".encode()) for event_id in (1, 2, 3)
    ]
    _write(kafka_config, names, first_run)
    away = _stores(tmp_path, "away")
    restore_partitions(kafka_config, names, away, topics=(names.history,))
    assert away[0].history("w") == [b"run1-e1", b"run1-e2", b"run1-e3"]

    # While the store is away: the retention ends, and the id is started again.
    _write(kafka_config, names, [(0, "w", event_id, None) for event_id in (1, 2, 3)])
    _write(kafka_config, names, [(0, "w", 1, b"run2-e1")])
    _until_cleaned(kafka_config, names, {("w", 2), ("w", 3)})

    with capture_logs() as logs:
        restore_partitions(kafka_config, names, away, topics=(names.history,))

    assert away[0].history("w") == [b"run2-e1"]
    rebuilt = [entry for entry in logs if entry["event"] == "partition store rebuilt"]
    assert [(entry["partition"], entry["reason"]) for entry in rebuilt] == [
        (0, "stale"),
    ]
    for store in away.values():
        store.close()


def test_a_store_whose_checkpoint_is_below_the_log_start_is_rebuilt(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    """Records deleted below the log start offset (only possible once an operator added
    ``delete`` to the cleanup policy) may have been tombstones the store never saw."""
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(kafka_config, names, [(0, "a", 1, b"a1")])  # offset 0, its marker at 1
    stores = _stores(tmp_path, "truncated")
    restore_partitions(kafka_config, names, stores, topics=(names.history,))
    assert stores[0].checkpoint(names.history) == 2

    _write(kafka_config, names, [(0, "a", 1, None)])  # offset 2: a's retention ended
    _write(kafka_config, names, [(0, "b", 1, b"b1")])  # offset 4
    set_topic_config(kafka_config, names.history, cleanup_policy="compact,delete")
    _delete_records(kafka_config, TopicPartition(names.history, 0, 4))

    with capture_logs() as logs:
        restore_partitions(kafka_config, names, stores, topics=(names.history,))

    assert stores[0].history("a") == []
    assert stores[0].history("b") == [b"b1"]
    rebuilt = [entry for entry in logs if entry["event"] == "partition store rebuilt"]
    assert [(entry["partition"], entry["reason"]) for entry in rebuilt] == [
        (0, "below the log start"),
    ]
    for store in stores.values():
        store.close()


def test_a_store_whose_checkpoint_is_past_the_end_of_the_topic_is_rebuilt(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    """The topics were deleted and created again while the worker's state directory
    stayed (a reset namespace): the store's checkpoint is past the new topic's end. It
    resumed there, kept the old topic's histories and skipped the new one's records."""
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(kafka_config, names, [(0, "a", 1, b"a1")])  # offset 0, its marker at 1
    old = PartitionStore(tmp_path / "recreated" / "partition-0")
    batch = StoreBatch()  # fresh, and far ahead: the topic it read had 100 offsets
    batch.put_event("gone", 1, b"of the deleted topic")
    batch.checkpoint(names.history, 100)
    batch.mark_fresh(int(time.time() * 1000))
    old.write(batch)

    with capture_logs() as logs:
        [stats] = restore_partitions(kafka_config, names, {0: old}, topics=(names.history,))

    assert [wid for wid, _ in old.workflow_ids()] == ["a"]
    assert old.checkpoint(names.history) == 2
    assert stats.rebuilt is Rebuild.BEYOND_END
    rebuilt = [entry for entry in logs if entry["event"] == "partition store rebuilt"]
    assert [(entry["reason"], entry["end"]) for entry in rebuilt] == [("beyond the end", 2)]
    old.close()


def test_a_store_that_never_kept_its_fresh_as_of_time_is_rebuilt_once(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    """A store written before stores kept the time cannot tell how stale it is."""
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(kafka_config, names, [(0, "a", 1, b"a1")])
    old = PartitionStore(tmp_path / "legacy" / "partition-0")
    batch = StoreBatch()  # what an older version left: records and checkpoint, no time
    batch.put_event("gone", 1, b"collected while the store was away")
    batch.checkpoint(names.history, 1)
    old.write(batch)

    [first] = restore_partitions(kafka_config, names, {0: old}, topics=(names.history,))
    [second] = restore_partitions(kafka_config, names, {0: old}, topics=(names.history,))

    assert (first.rebuilt, second.rebuilt) == (Rebuild.NO_FRESH_AS_OF, None)
    assert [wid for wid, _ in old.workflow_ids()] == ["a"]
    old.close()


def test_a_store_no_longer_read_from_the_timers_topic_is_rebuilt_without_its_timers(
    kafka_config: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    """``chronik worker --no-timers`` after a run without it: the store held the workflow
    code's timers and the timers topic's checkpoint. Kept, the owner fired those timers
    along with the timer service, and once its commits had vouched for a checkpoint it no
    longer followed, a later run without the flag resumed from there — past tombstones
    the cleaner may have removed meanwhile."""
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(kafka_config, names, [(0, "a", 1, b"a1")])
    key = serde.encode_timer_key("a", "sleep:1")
    sleep = serde.encode_timer(DurableTimer("a", "run", "sleep:1", 5_000))
    _transaction(kafka_config, names.timers, [(0, key, sleep)])
    store = PartitionStore(tmp_path / "switched" / "partition-0")
    both = (names.history, names.timers)
    restore_partitions(kafka_config, names, {0: store}, topics=both)
    assert [t.timer_id for t in store.due_timers(2**62)] == ["sleep:1"]

    [without] = restore_partitions(kafka_config, names, {0: store}, topics=(names.history,))

    assert without.rebuilt is Rebuild.UNREAD_TOPIC
    assert store.due_timers(2**62) == []  # the timer service fires it, not this owner
    assert store.checkpoint(names.timers) is None
    assert store.history("a") == [b"a1"]

    _transaction(kafka_config, names.timers, [(0, key, None)])  # fired meanwhile, cleared
    [back] = restore_partitions(kafka_config, names, {0: store}, topics=both)

    assert (back.rebuilt, back.timer_records) == (None, 2)  # the topic read from its start
    assert store.due_timers(2**62) == []
    store.close()


def test_records_deleted_after_the_checks_make_the_restore_start_over_and_rebuild(
    kafka_config: dict[str, str],
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race of a DeleteRecords between the restore's checks and its first fetch: the
    checks (here: the first) pass, the fetch is refused as out of range. librdkafka's
    default would jump to the end and keep what the store held; the restore says so and
    starts over, and its checks then find the store below the log start."""
    TopicAdmin(kafka_config).create(Catalogue(namespace, PARTITIONS))
    names = TopicNames(namespace)
    _write(kafka_config, names, [(0, "a", 1, b"a1")])  # offset 0, its marker at 1
    stores = _stores(tmp_path, "raced")
    restore_partitions(kafka_config, names, stores, topics=(names.history,))
    _write(kafka_config, names, [(0, "a", 1, None)])  # offset 2: a's retention ended
    _write(kafka_config, names, [(0, "b", 1, b"b1")])  # offset 4
    set_topic_config(kafka_config, names.history, cleanup_policy="compact,delete")
    _delete_records(kafka_config, TopicPartition(names.history, 0, 4))
    real_check, checked = restore_module._why_rebuild, []

    def first_check_ran_before_the_deletion(
        store: PartitionStore, views: list[TopicView], now_ms: int
    ) -> tuple[Rebuild, dict[str, Any]] | None:
        checked.append(store)
        return None if len(checked) == 1 else real_check(store, views, now_ms)

    monkeypatch.setattr(restore_module, "_why_rebuild", first_check_ran_before_the_deletion)

    with capture_logs() as logs:
        restore_partitions(kafka_config, names, stores, topics=(names.history,))

    assert stores[0].history("a") == []
    assert stores[0].history("b") == [b"b1"]
    events = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert events == [
        "records deleted while restoring: checking the stores again",
        "partition store rebuilt",
    ]
    for store in stores.values():
        store.close()
