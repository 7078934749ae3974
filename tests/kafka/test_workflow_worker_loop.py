"""The workflow worker's loop takes what arrives while a transaction commits, against a real
broker: a start that comes in during the commit goes into the next transaction, begun the
moment the commit is done, instead of waiting for the step after it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from runtime.messages import StartWorkflow
from tests.kafka.test_fencing_offsets import _owner_of_both_partitions
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import partition_for_key, producer_config
from workers.workflow_worker import WorkflowWorker

pytestmark = pytest.mark.kafka


def _start(producer: Producer, names: TopicNames, workflow_id: str) -> int:
    """A start of ``workflow_id`` (of a type no worker knows: it fails at once, which is
    enough to write records) on the inbox; its partition."""
    key = serde.workflow_key(workflow_id)
    partition = partition_for_key(key, 2)
    start = StartWorkflow(workflow_id, "not_registered", "q", (), f"request-{workflow_id}")
    producer.produce(names.inbox, key=key, value=serde.encode_inbox(start), partition=partition)
    assert producer.flush(30) == 0
    return partition


def _staged_for(worker: WorkflowWorker, partition: int, workflow_id: str) -> bool:
    key = serde.workflow_key(workflow_id)
    owned = worker._partitions.get(partition)
    return owned is not None and any(r.key == key for r in owned.pending.records)


def test_a_start_that_arrives_during_a_commit_is_in_the_next_transaction(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    names = TopicNames(namespace)
    producer = Producer(producer_config({"bootstrap.servers": kafka_bootstrap}))
    worker = _owner_of_both_partitions(kafka_bootstrap, namespace, tmp_path)
    release = threading.Event()
    commit, take = worker._transactions._commit, worker._take
    takes: list[int] = []

    def held_commit(attempts: int = 3) -> None:
        release.wait(60)
        commit(attempts)

    def counted_take(*args: Any) -> int | None:
        takes.append(1)
        return take(*args)

    try:
        while worker._transactions.under_way:  # the fence-only one of a new owner
            worker._step()
        monkeypatch.setattr(worker._transactions, "_commit", held_commit)
        monkeypatch.setattr(worker, "_take", counted_take)
        first = _start(producer, names, "first")
        deadline = time.monotonic() + 30
        while not worker._transactions.under_way:  # its transaction begun, its commit held
            assert time.monotonic() < deadline, "the first start was never processed"
            worker._step()
        assert first in worker._partitions and worker._transactions.committing
        takes.clear()
        stepping = threading.Thread(target=worker._step)
        stepping.start()
        deadline = time.monotonic() + 30
        while len(takes) < 2:  # the step's first poll is over: it waits for the commit
            assert time.monotonic() < deadline, "the step did not poll while the commit ran"
            assert stepping.is_alive(), "the step ended while the commit was held"
            time.sleep(0.01)
        second = _start(producer, names, "second")
        deadline = time.monotonic() + 30
        while not _staged_for(worker, second, "second"):
            assert time.monotonic() < deadline, "a start that arrived during the commit waited"
            time.sleep(0.01)
        release.set()
        stepping.join(30)
        assert not stepping.is_alive()
        # That step settled the first transaction and began the next with the second start.
        committing = worker._committing.get(second)
        key = serde.workflow_key("second")
        assert committing is not None and any(r.key == key for r in committing.records)
    finally:
        release.set()
        worker._close()
