"""Restoring partition stores from the topics, against a real broker.

A worker given several partitions restores them through one consumer; each store must end
up with exactly its partition's records (tombstones applied, transaction markers skipped)
and checkpoints from which a later restore reads only what came after.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from runtime.messages import DurableTimer
from runtime.store import PartitionStore
from topics import carried_timers, serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers.restore import RestoreError, restore_partitions

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
    assert stores[1].checkpoint(names.timers) == 3
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
