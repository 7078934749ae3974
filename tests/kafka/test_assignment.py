"""Workers assign the partitions their group gives them at committed offsets they looked up
themselves (`workers.assignment`, the way around confluentinc/librdkafka#5586), against a
real broker: each partition starts at its committed offset, or at its beginning when none
was committed, and offsets an open transaction holds are waited for, not read stale."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers.assignment import assign_at_committed, committed_offsets
from workers.membership import Member

pytestmark = pytest.mark.kafka


def _inbox_of_two_partitions(kafka_config: dict[str, str], namespace: str, records: int) -> str:
    TopicAdmin(kafka_config).create(Catalogue(namespace, 2))
    inbox = TopicNames(namespace).inbox
    producer = Producer(producer_config(kafka_config))
    for i in range(records):
        for partition in (0, 1):
            producer.produce(inbox, key=b"k", value=str(i).encode(), partition=partition)
    assert producer.flush(30) == 0
    return inbox


def _commit(kafka_config: dict[str, str], group: str, offsets: list[TopicPartition]) -> None:
    committer = Consumer({**kafka_config, "group.id": group})
    try:
        committer.commit(offsets=offsets, asynchronous=False)
    finally:
        committer.close()


def _assign_at_committed(consumer: Consumer, assigned: list[TopicPartition]) -> None:
    """An ``on_assign`` callback that assigns as the workers' callbacks do."""
    assign_at_committed(consumer, assigned)


def test_each_partition_starts_at_its_committed_offset_or_its_beginning(
    kafka_config: dict[str, str], namespace: str
) -> None:
    inbox = _inbox_of_two_partitions(kafka_config, namespace, records=10)
    group = f"{namespace}.assign-test"
    _commit(kafka_config, group, [TopicPartition(inbox, 0, 6)])
    member = Member(kafka_config["bootstrap.servers"], namespace, "assign-test")
    consumer = Consumer(member.group_config(group))
    seen: dict[int | None, list[int | None]] = {0: [], 1: []}
    try:
        consumer.subscribe([inbox], on_assign=_assign_at_committed)
        deadline = time.monotonic() + 30
        while (len(seen[0]), len(seen[1])) != (4, 10) and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                assert message.error() is None, message.error()
                seen[message.partition()].append(message.offset())
        assignment = consumer.assignment()
    finally:
        consumer.close()
    assert seen == {0: [6, 7, 8, 9], 1: list(range(10))}
    assert sorted(tp.partition for tp in assignment) == [0, 1]


def test_offsets_an_open_transaction_holds_are_waited_for(
    kafka_config: dict[str, str], namespace: str
) -> None:
    """A new owner asking while its predecessor's transaction is still open gets the
    offsets that transaction commits, not the older ones it replaces: assigned at those,
    it would process that transaction's inbox records a second time."""
    inbox = _inbox_of_two_partitions(kafka_config, namespace, records=10)
    group = f"{namespace}.assign-test"
    _commit(kafka_config, group, [TopicPartition(inbox, 0, 6)])
    predecessor = Producer(
        {**producer_config(kafka_config), "transactional.id": f"assign-{uuid.uuid4().hex}"}
    )
    predecessor.init_transactions(30)
    member_of_group = Consumer({**kafka_config, "group.id": group})
    predecessor.begin_transaction()
    predecessor.send_offsets_to_transaction(
        [TopicPartition(inbox, 0, 9)], member_of_group.consumer_group_metadata(), 30
    )
    threading.Timer(2.0, predecessor.commit_transaction, args=(30,)).start()
    reader = Consumer(
        Member(kafka_config["bootstrap.servers"], namespace, "assign-test").group_config(group)
    )
    try:
        committed = committed_offsets(reader, [TopicPartition(inbox, 0)])
    finally:
        reader.close()
        member_of_group.close()
        predecessor.flush(10)
    # 6 would have been the answer had the lookup not waited for the commit, 2 s on.
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 9)]
