"""The workflow worker's background transactions, against a real broker.

The worker applies a transaction to its stores with the offsets the delivery reports gave,
asking a report only of the last record of each tracked partition; and it recovers from a
failed transaction by aborting it and beginning the next one on the same producer.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers.partition import Outbound
from workers.transaction import BackgroundTransactions


def _producer(config: dict[str, str]) -> Producer:
    producer = Producer(
        {
            **producer_config(config),
            "transactional.id": f"txn-test-{uuid.uuid4().hex}",
            # A record for a missing topic fails after this, not after the default 30 s.
            "topic.metadata.propagation.max.ms": 1000,
        }
    )
    producer.init_transactions(30)
    return producer


def _group_metadata(config: dict[str, str], names: TopicNames) -> object:
    consumer = Consumer({**config, "group.id": f"{names.namespace}.txn-test"})
    return consumer.consumer_group_metadata()


def test_last_offsets_are_those_of_the_last_record_per_tracked_partition(
    kafka_config: dict[str, str], namespace: str
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, 2))
    names = TopicNames(namespace)
    transactions = BackgroundTransactions(_producer(kafka_config), frozenset({names.history}))
    records = [
        Outbound(names.history, f"k{i}".encode(), b"v", partition=i % 2) for i in range(5)
    ] + [Outbound(names.status, b"s", b"v", partition=0)]
    try:
        transactions.start(records, [], _group_metadata(kafka_config, names))
        last = transactions.wait()
        transactions.start(records[:1], [], _group_metadata(kafka_config, names))
        after = transactions.wait()
    finally:
        transactions.close()

    # Partition 0 got records 0, 2, 4 (offsets 0-2), partition 1 records 1, 3 (0-1);
    # status is not tracked. The second transaction's record follows the first's marker.
    assert last == {(names.history, 0): 2, (names.history, 1): 1}
    assert after == {(names.history, 0): 4}


def test_a_failed_transaction_is_raised_and_the_producer_goes_on_after_abort(
    kafka_config: dict[str, str], namespace: str
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, 1))
    names = TopicNames(namespace)
    producer = _producer(kafka_config)
    transactions = BackgroundTransactions(producer, frozenset({names.history}))
    metadata = _group_metadata(kafka_config, names)
    missing = Outbound(f"{namespace}.no-such-topic", b"k", b"v", partition=0)
    try:
        transactions.start([missing], [], metadata)
        with pytest.raises(KafkaException):
            transactions.wait()
        assert not transactions.under_way
        producer.abort_transaction(30)
        transactions.start([Outbound(names.history, b"k", b"v", partition=0)], [], metadata)
        assert transactions.wait() == {(names.history, 0): 0}
    finally:
        transactions.close()

    consumer = Consumer(
        {**kafka_config, "group.id": "txn-test-reader", "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition(names.history, 0, 0)])
    read = [m for m in consumer.consume(10, 5) if m.error() is None]
    consumer.close()
    assert [(m.key(), m.value()) for m in read] == [(b"k", b"v")]
