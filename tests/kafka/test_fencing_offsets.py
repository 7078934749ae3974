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
from workers.membership import Member
from workers.workflow_worker import WorkflowWorker, WorkflowWorkerConfig

pytestmark = pytest.mark.kafka


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
    member = Member(kafka_bootstrap, namespace, f"w-{uuid.uuid4().hex[:6]}")
    worker = WorkflowWorker(
        WorkflowWorkerConfig(member=member, state_dir=tmp_path), WorkflowRegistry([])
    )
    worker._producer.init_transactions(60)
    worker._consumer.subscribe(
        [names.inbox], on_assign=worker._on_assign, on_revoke=worker._on_revoke
    )
    deadline = time.monotonic() + 30
    try:
        while sorted(worker._partitions) != [0, 1] and time.monotonic() < deadline:
            worker._step()
        positions = worker._inbox_positions({})
        assert [(tp.partition, tp.offset) for tp in positions] == [(0, 0), (1, 0)]
    finally:
        worker._close()
