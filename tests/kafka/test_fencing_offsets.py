"""Every workflow-worker transaction carries an inbox offset for every owned partition.

librdkafka has no position for a partition nothing was consumed from since it was
assigned, and sends no offsets for a transaction with none: a step that only fired timers
then went unfenced, and a worker dropped from the group (say, while it restored) fired
them alongside the new owner.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from runtime.engine import WorkflowRegistry
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from workers import partition as partition_module
from workers import workflow_worker
from workers.membership import Member
from workers.workflow_worker import WorkflowWorker, WorkflowWorkerConfig

pytestmark = pytest.mark.kafka


def _owner_of_both_partitions(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> WorkflowWorker:
    """A workflow worker of its own id, stepped until it owns (has restored) both
    partitions; the caller closes it."""
    member = Member(kafka_bootstrap, namespace, f"w-{uuid.uuid4().hex[:6]}")
    worker = WorkflowWorker(
        WorkflowWorkerConfig(member=member, state_dir=tmp_path), WorkflowRegistry([])
    )
    worker._producer.init_transactions(60)
    worker._consumer.subscribe(
        [TopicNames(namespace).inbox], on_assign=worker._on_assign, on_revoke=worker._on_revoke
    )
    deadline = time.monotonic() + 30
    try:
        while sorted(worker._partitions) != [0, 1] and time.monotonic() < deadline:
            worker._step()
    except BaseException:
        worker._close()
        raise
    return worker


@pytest.mark.parametrize("committed_before", [False, True], ids=["fresh", "committed"])
def test_a_partition_nothing_was_consumed_from_still_commits_its_offset(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, committed_before: bool
) -> None:
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    names = TopicNames(namespace)
    if committed_before:  # a worker owned the partitions before
        other = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": names.workflow_group})
        other.commit(
            offsets=[TopicPartition(names.inbox, p, 0) for p in (0, 1)], asynchronous=False
        )
        other.close()
    worker = _owner_of_both_partitions(kafka_bootstrap, namespace, tmp_path)
    try:
        positions = worker._inbox_positions({})
        assert [(tp.partition, tp.offset) for tp in positions] == [(0, 0), (1, 0)]
    finally:
        worker._close()


def test_an_idle_owner_keeps_its_stores_fresh(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store is fresh as of its owner's last committed transaction, and an owner with
    no message to process committed none: after a quiet day (a weekend) every store was
    older than the tombstones' retention, and a restart rebuilt each from offset 0. An
    idle owner commits its fence offsets alone every `FRESH_AS_OF_EVERY_MS`."""
    monkeypatch.setattr(partition_module, "FRESH_AS_OF_EVERY_MS", 300)
    monkeypatch.setattr(workflow_worker, "FRESH_AS_OF_EVERY_MS", 300)
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    worker = _owner_of_both_partitions(kafka_bootstrap, namespace, tmp_path)
    try:
        restored = {n: p.store.fresh_as_of() for n, p in worker._partitions.items()}
        quiet_until = time.monotonic() + 1.5
        while time.monotonic() < quiet_until:
            worker._step()
        now = time.time_ns() // 1_000_000
        for number, p in worker._partitions.items():
            fresh = p.store.fresh_as_of()
            assert fresh is not None and fresh > (restored[number] or 0)
            assert now - fresh < 1_000  # at most the interval and a commit behind
    finally:
        worker._close()
