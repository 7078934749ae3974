"""Topics on a real broker: creation and validation, the partitioner, the serde, compaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic
from structlog.testing import capture_logs

from runtime import events, messages
from runtime.events import HistoryEvent
from runtime.messages import DurableTimer, Reply
from tests.topics.samples import build, union_members
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue
from topics.errors import DecodeError, TopicMismatchError
from topics.partitioner import partition_for_key, producer_config
from workers.cli import cli

Record = tuple[bytes | None, bytes | None]


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _make_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = _admin(bootstrap)  # referenced until the futures resolve
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
    )
    for future in futures.values():
        future.result(timeout=30)
    TopicAdmin({"bootstrap.servers": bootstrap})._wait_for_leaders([name])


def _configs(bootstrap: str, name: str) -> dict[str, str]:
    admin = _admin(bootstrap)  # referenced until the futures resolve
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)])
    [entries] = [f.result(timeout=30) for f in futures.values()]
    return {key: entry.value for key, entry in entries.items()}


def _partitions(bootstrap: str) -> dict[str, int]:
    metadata = _admin(bootstrap).list_topics(timeout=30)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _produce(bootstrap: str, topic: str, records: Sequence[Record]) -> list[int]:
    """Produce and flush; returns the partition each record landed on, in order."""
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    landed: dict[int, int] = {}
    for index, (key, value) in enumerate(records):

        def report(err: Any, msg: Any, index: int = index) -> None:
            assert err is None, err
            landed[index] = msg.partition()

        producer.produce(topic, key=key, value=value, on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    return [landed[i] for i in range(len(records))]


def _read_all(bootstrap: str, topic: str, partition: int = 0) -> list[Any]:
    """Every record of one partition from its log start to its high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        tp = TopicPartition(topic, partition)
        _, high = consumer.get_watermark_offsets(tp, timeout=30)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            position = consumer.position([tp])[0].offset
            if position is not None and position >= high:
                break
            for record in consumer.consume(500, timeout=0.5):
                assert record.error() is None, record.error()
                records.append(record)
                offset = record.offset()
                if offset is not None and offset >= high - 1:
                    return records
        return records
    finally:
        consumer.close()


# --- creation and validation ----------------------------------------------------------------


def test_create_makes_every_topic_with_its_partitions_and_configs(
    kafka_bootstrap: str, namespace: str
) -> None:
    catalogue = Catalogue(namespace, partitions=5)
    created = TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(catalogue)
    assert sorted(created) == sorted(spec.name for spec in catalogue.topics())
    counts = _partitions(kafka_bootstrap)
    for spec in catalogue.topics():
        assert counts[spec.name] == spec.partitions
        actual = _configs(kafka_bootstrap, spec.name)
        for key, value in spec.config.items():
            assert actual[key] == value, (spec.name, key)
    for name in (catalogue.names.history, catalogue.names.timers, catalogue.names.status):
        assert _configs(kafka_bootstrap, name)["cleanup.policy"] == "compact"
    assert _configs(kafka_bootstrap, catalogue.names.inbox)["cleanup.policy"] == "delete"


def test_create_is_idempotent_and_check_passes(kafka_bootstrap: str, namespace: str) -> None:
    admin = TopicAdmin({"bootstrap.servers": kafka_bootstrap})
    catalogue = Catalogue(namespace, partitions=3)
    assert admin.create(catalogue)
    assert admin.create(catalogue) == []
    assert admin.check(catalogue) == []
    assert admin.check(Catalogue(namespace, partitions=7), infer_partitions=True) == []
    result = CliRunner().invoke(
        cli, ["--bootstrap-servers", kafka_bootstrap, "--namespace", namespace, "topics", "check"]
    )
    assert result.exit_code == 0, result.output
    assert "topics OK" in result.output


def test_create_again_without_partitions_keeps_the_namespaces_count(
    kafka_bootstrap: str, namespace: str
) -> None:
    """The README's `chronik topics create` is "once per namespace" and idempotent; run
    again without --partitions on a namespace made with 4, it was refused ("Chronik needs
    12"): the default is now the existing inbox's count, as for `topics check`."""
    args = ["--bootstrap-servers", kafka_bootstrap, "--namespace", namespace, "topics"]
    first = CliRunner().invoke(cli, [*args, "create", "--partitions", "1"])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1].endswith("(6 created, 1 partition)")
    again = CliRunner().invoke(cli, [*args, "create"])
    assert again.exit_code == 0, again.output
    assert again.output == f"namespace {namespace}: 6 topics ready (0 created, 1 partition)\n"
    explicit = CliRunner().invoke(cli, [*args, "create", "--partitions", "12"])
    assert explicit.exit_code == 2
    assert "partitions=1, but Chronik needs 12; nothing was created" in explicit.output
    assert "without --partitions the existing count is kept" in explicit.output


def test_a_different_partition_count_is_refused_before_anything_is_created(
    kafka_bootstrap: str, namespace: str
) -> None:
    catalogue = Catalogue(namespace, partitions=4)
    _make_topic(kafka_bootstrap, catalogue.names.history, 2, **{"cleanup.policy": "compact"})
    with pytest.raises(TopicMismatchError) as caught:
        TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(catalogue)
    error = caught.value
    assert (error.topic, error.setting, error.expected, error.actual) == (
        catalogue.names.history, "partitions", 4, 2,
    )  # fmt: skip
    assert catalogue.names.inbox not in _partitions(kafka_bootstrap)

    args = ["--bootstrap-servers", kafka_bootstrap, "--namespace", namespace, "topics"]
    result = CliRunner().invoke(cli, [*args, "create", "--partitions", "4"])
    assert result.exit_code == 2
    assert f"topic {catalogue.names.history} exists with partitions=2" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, [*args, "check", "--partitions", "4"])
    assert result.exit_code == 2
    assert f"{catalogue.names.inbox}: missing" in result.output
    assert f"`chronik --namespace {namespace} topics create` creates what is missing" in (
        result.output
    )


def test_a_deleting_history_topic_is_refused(kafka_bootstrap: str, namespace: str) -> None:
    catalogue = Catalogue(namespace, partitions=2)
    _make_topic(kafka_bootstrap, catalogue.names.history, 2, **{"cleanup.policy": "delete"})
    with pytest.raises(
        TopicMismatchError, match=r"cleanup.policy=delete, but Chronik needs compact"
    ):
        TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(catalogue)


def test_task_queue_topics_are_created_on_demand(kafka_bootstrap: str, namespace: str) -> None:
    admin = TopicAdmin({"bootstrap.servers": kafka_bootstrap})
    catalogue = Catalogue(namespace, partitions=2)
    topic = catalogue.names.tasks("payments")
    assert topic not in _partitions(kafka_bootstrap)
    assert admin.ensure_task_queue(catalogue, "payments") == 2
    assert admin.ensure_task_queue(catalogue, "payments") == 2
    assert _partitions(kafka_bootstrap)[topic] == 2
    assert _configs(kafka_bootstrap, topic)["cleanup.policy"] == "delete"


def test_an_existing_task_queue_keeps_its_partition_count(
    kafka_bootstrap: str, namespace: str
) -> None:
    catalogue = Catalogue(namespace, partitions=2)
    topic = catalogue.names.tasks("emails")
    _make_topic(kafka_bootstrap, topic, 5, **{"cleanup.policy": "delete"})
    admin = TopicAdmin({"bootstrap.servers": kafka_bootstrap})
    assert admin.ensure_task_queue(catalogue, "emails") == 5
    assert _partitions(kafka_bootstrap)[topic] == 5


# --- partitioning ----------------------------------------------------------------------------


def test_records_land_where_java_murmur2_puts_them(kafka_bootstrap: str, namespace: str) -> None:
    topic = f"{namespace}.partitioning"
    _make_topic(kafka_bootstrap, topic, 7)
    keys = [f"workflow-{i}".encode() for i in range(300)] + ["wf-ü-漢".encode(), b"x", b"ab"]
    landed = _produce(kafka_bootstrap, topic, [(key, b"v") for key in keys])
    assert landed == [partition_for_key(key, 7) for key in keys]


# --- the serde through a real topic --------------------------------------------------------


def _samples() -> list[tuple[Record, Callable[[bytes], Any], Any]]:
    """(record, decoder of its value, expected value) for every record type."""
    out: list[tuple[Record, Callable[[bytes], Any], Any]] = []
    for i, cls in enumerate(union_members(events.EventAttributes)):
        event = HistoryEvent("wf-1", "run-1", i + 1, 1_700_000_000_000 + i, build(cls, full=True))
        record = (serde.encode_history_key("wf-1", i + 1), serde.encode_history_event(event))
        out.append((record, serde.decode_history_event, event))
    for cls in union_members(messages.InboxMessage):
        message = build(cls, full=True)
        record = (serde.workflow_key(message.workflow_id), serde.encode_inbox(message))
        out.append((record, serde.decode_inbox, message))
    for cls in union_members(messages.TaskRecord):
        task = build(cls, full=False)
        out.append(((serde.task_key(task.workflow_id, task.seq), serde.encode_task(task)),
                    serde.decode_task, task))  # fmt: skip
    for cls in union_members(messages.ReplyBody):
        reply = Reply("client-1", "r", "wf-1", build(cls, full=True))
        out.append(((serde.client_key("client-1"), serde.encode_reply(reply)),
                    serde.decode_reply, reply))  # fmt: skip
    timer = DurableTimer("wf-1", "run-1", "sleep/1", 1_700_000_000_000)
    out.append(((serde.encode_timer_key("wf-1", "sleep/1"), serde.encode_timer(timer)),
                serde.decode_timer, timer))  # fmt: skip
    status = build(messages.StatusRecord, full=True)
    out.append(((serde.workflow_key(status.workflow_id), serde.encode_status(status)),
                serde.decode_status, status))  # fmt: skip
    return out


def test_every_schema_round_trips_through_a_topic(kafka_bootstrap: str, namespace: str) -> None:
    topic = f"{namespace}.roundtrip"
    _make_topic(kafka_bootstrap, topic, 1)
    samples = _samples()
    _produce(kafka_bootstrap, topic, [record for record, _, _ in samples])
    read = _read_all(kafka_bootstrap, topic)
    assert len(read) == len(samples)
    for message, ((key, _), decode, expected) in zip(read, samples, strict=True):
        assert message.key() == key
        assert decode(message.value()) == expected


def test_a_corrupt_record_names_its_topic_partition_and_offset(
    kafka_bootstrap: str, namespace: str
) -> None:
    topic = f"{namespace}.corrupt"
    _make_topic(kafka_bootstrap, topic, 1)
    good = serde.encode_timer(DurableTimer("wf", "run", "t", 1))
    _produce(kafka_bootstrap, topic, [(b"k", good), (b"k", good[:12])])
    first, second = _read_all(kafka_bootstrap, topic)
    assert serde.decode_timer(first.value()).timer_id == "t"
    with pytest.raises(DecodeError) as caught:
        serde.decode_timer(second.value(), topic=second.topic(), partition=second.partition(),
                           offset=second.offset())  # fmt: skip
    assert caught.value.location == f"{topic}[0]@1"


# --- compaction --------------------------------------------------------------------------------


def test_history_keys_survive_compaction_and_a_rewrite_replaces_the_first(
    kafka_bootstrap: str, namespace: str
) -> None:
    topic = f"{namespace}.history"
    _make_topic(kafka_bootstrap, topic, 1, **{
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100", "min.compaction.lag.ms": "0",
    })  # fmt: skip

    def event(event_id: int, request_id: str) -> bytes:
        attributes = events.SignalReceived("s", (), request_id)
        return serde.encode_history_event(HistoryEvent("wf", "run", event_id, 1, attributes))

    first = [(serde.encode_history_key("wf", i), event(i, "first")) for i in range(1, 6)]
    _produce(kafka_bootstrap, topic, first)
    time.sleep(0.2)
    rewrite = (serde.encode_history_key("wf", 3), event(3, "second"))
    _produce(kafka_bootstrap, topic, [rewrite])

    deadline, filler = time.monotonic() + 90, 0
    while True:
        # New records roll segments (segment.ms) so the cleaner may take the older ones.
        time.sleep(0.3)
        filler += 1
        _produce(kafka_bootstrap, topic, [(serde.encode_history_key("other", filler), b"x")])
        records = _read_all(kafka_bootstrap, topic)
        wf = [serde.decode_history_key(r.key()) for r in records]
        if records[0].offset() > 0 or len(wf) < 6 + filler:
            break  # the cleaner has run: something was removed
        assert time.monotonic() < deadline, "the log cleaner did not run within 90 s"

    by_key: dict[tuple[str, int], list[HistoryEvent]] = {}
    for record in records:
        key = serde.decode_history_key(record.key())
        if key.workflow_id == "wf":
            by_key.setdefault(tuple(key), []).append(serde.decode_history_event(record.value()))  # type: ignore[arg-type]
    assert sorted(by_key) == [("wf", i) for i in range(1, 6)]  # every event survived
    assert [len(v) for v in by_key.values()] == [1] * 5
    rewritten = by_key[("wf", 3)][0].attributes
    assert isinstance(rewritten, events.SignalReceived)
    assert rewritten.request_id == "second"


def test_a_group_has_members_only_while_a_consumer_is_in_it(
    kafka_bootstrap: str, namespace: str
) -> None:
    admin = TopicAdmin({"bootstrap.servers": kafka_bootstrap})
    catalogue = Catalogue(namespace, partitions=1)
    admin.ensure_task_queue(catalogue, "q")
    group = catalogue.names.activity_group("q")

    def answer() -> bool | None:  # None while the group coordinator is still loading
        deadline = time.monotonic() + 30
        while (has := admin.group_has_members(group)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return has

    assert answer() is False  # nobody ever joined
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    consumer.subscribe([catalogue.names.tasks("q")])
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert answer() is True
    finally:
        consumer.close()


def test_partitions_that_get_no_leader_in_time_are_named(kafka_bootstrap: str) -> None:
    """Giving up on them said nothing: a worker then seemed slow for no reason."""
    admin = TopicAdmin({"bootstrap.servers": kafka_bootstrap}, timeout=0.5)
    with capture_logs() as logs:
        admin._wait_for_leaders(["never-created-topic"])
    [warning] = [e for e in logs if "without a leader" in e["event"]]
    assert warning["log_level"] == "warning"
    assert warning["topics"] == {"never-created-topic": "no metadata yet"}
