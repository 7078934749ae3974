"""Bad input gets a clear error and loses nothing (issue 4), and any producer can start work."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from examples import order
from runtime import activity, kafka_transport, workflow
from runtime.client import Client
from runtime.errors import WorkflowFailureError
from runtime.history_json import history_from_json
from runtime.kafka_transport import PayloadTooLargeError
from runtime.messages import WorkflowStatus
from runtime.replay import Replayer
from tests.integration.kafka_reading import read_topic
from topics.catalogue import TopicNames
from topics.errors import TopicsMissingError
from topics.partitioner import partition_for
from workers.worker import Worker

pytestmark = pytest.mark.kafka

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro"
# What a producer in another language needs: these files, parsed in this order.
AVRO_FILES_IN_DEPENDENCY_ORDER = (
    "payload",
    "failure",
    "retry_policy",
    "parent_ref",
    "inbox_message",
)


@pytest.fixture
async def order_worker(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    async with Worker(
        client,
        task_queue="orders",
        workflows=[*order.WORKFLOWS, calls_an_activity_with_a_huge_result, returns_a_huge_result],
        activities=[*order.ACTIVITIES, huge_result],
    ) as worker:
        yield worker


async def test_undecodable_inbox_record_goes_to_the_dead_letter_topic(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: Worker
) -> None:
    names = TopicNames(topics_ready)
    workflow_id = "same-partition-as-garbage"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(names.inbox, key=workflow_id.encode(), value=b"\x00not avro at all")
    producer.flush(10)

    # The partition keeps going: a workflow on the very same partition completes.
    result = await client.execute_workflow(
        order.process_order, "after-garbage", id=workflow_id, task_queue="orders"
    )
    assert result[0] == "payment-after-garbage"

    [dead] = read_topic(kafka_bootstrap, names.inbox_dlq)
    assert dead.value() == b"\x00not avro at all"
    assert dead.key() == workflow_id.encode()
    headers = dict(dead.headers())
    assert b"cannot decode" in headers["chronik.reason"]
    assert headers["chronik.topic"] == names.inbox.encode()

    # What an operator reads, without writing a consumer: `chronik dlq tail`.
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", "--bootstrap-servers", kafka_bootstrap,
         "--namespace", topics_ready, "dlq", "tail", "--from-beginning", "--idle-exit", "2",
         "--values"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    [line] = [json.loads(text) for text in listed.stdout.splitlines()]
    source = partition_for(workflow_id, 4)
    assert line["source"].startswith(f"{names.inbox}[{source}]@")
    assert line["reason"].startswith(f"cannot decode record at {line['source']}: starts with")
    assert line["key"] == workflow_id and line["value_bytes"] == 16
    assert base64.b64decode(line["value_base64"]) == b"\x00not avro at all"


async def test_an_inbox_record_too_large_to_produce_again_is_dead_lettered_without_it(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: Worker
) -> None:
    """Another language's producer (Java: max.request.size 1 MiB) may write a record the
    topic takes but librdkafka will not produce again: its dead letter must not fail the
    transaction (it did, on every retry, and the worker's partitions stood still)."""
    names = TopicNames(topics_ready)
    workflow_id = "same-partition-as-big-garbage"
    foreign = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "partitioner": "murmur2_random",
            "message.max.bytes": 1_048_000,
        }
    )
    foreign.produce(names.inbox, key=workflow_id.encode(), value=b"\x00" + b"x" * 1_010_000)
    assert foreign.flush(10) == 0

    result = await asyncio.wait_for(
        client.execute_workflow(order.process_order, "after", id=workflow_id, task_queue="orders"),
        timeout=60,
    )
    assert result[0] == "payment-after"
    [dead] = read_topic(kafka_bootstrap, names.inbox_dlq)
    headers = dict(dead.headers())
    assert dead.value() == b"" and headers["chronik.truncated"] == b"value"
    assert headers["chronik.original_size"] == b"1010001"
    assert b"cannot decode" in headers["chronik.reason"]


async def test_unknown_workflow_type_fails_that_workflow_with_a_clear_error(
    client: Client, order_worker: Worker
) -> None:
    handle = await client.start_workflow(
        "no_such_workflow", id=f"unknown-{uuid.uuid4().hex[:6]}", task_queue="orders"
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "no_such_workflow" in str(failure.value.cause)


HUGE = 1_200_000  # characters: over the 999,000-byte record limit once encoded


@activity.defn
async def huge_result() -> str:
    return "x" * HUGE


@workflow.defn
async def calls_an_activity_with_a_huge_result() -> str:
    result: str = await workflow.execute_activity(
        huge_result, start_to_close_timeout=timedelta(seconds=30)
    )
    return result


@workflow.defn
async def returns_a_huge_result() -> str:
    await workflow.execute_activity(order.noop, start_to_close_timeout=timedelta(seconds=30))
    return "x" * HUGE


async def test_records_kafka_would_refuse_fail_their_workflow_and_the_worker_goes_on(
    client: Client, order_worker: Worker
) -> None:
    # An activity result too large to report fails the activity, for good, saying why.
    with pytest.raises(WorkflowFailureError) as activity_failed:
        await client.execute_workflow(
            calls_an_activity_with_a_huge_result, id=f"huge-activity-{uuid.uuid4().hex[:6]}",
            task_queue="orders",
        )  # fmt: skip
    assert "result is" in str(activity_failed.value.cause.__cause__ or activity_failed.value.cause)
    # A workflow result too large for its history terminates the run, saying why; the
    # caller waiting for the result hears it at once.
    with pytest.raises(WorkflowFailureError, match="the limit is 999,000"):
        await asyncio.wait_for(
            client.execute_workflow(
                returns_a_huge_result, id=f"huge-result-{uuid.uuid4().hex[:6]}", task_queue="orders"
            ),
            timeout=8,  # under the client's 10 s re-ask: the first answer says it
        )
    # Neither wedged the partition: the next workflow runs as usual.
    await client.execute_workflow(
        order.one_activity, id=f"after-{uuid.uuid4().hex[:6]}", task_queue="orders"
    )


async def test_oversize_payload_is_refused_at_the_client(client: Client) -> None:
    with pytest.raises(PayloadTooLargeError, match="limit"):
        await client.start_workflow(
            order.process_order, "x" * 2_000_000, id="too-big", task_queue="orders"
        )


async def test_a_client_that_cannot_connect_says_why_and_leaves_nothing_open(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[_ClosingConsumer] = []

    class _ClosingConsumer(Consumer):  # the real client, noting its close
        closed = False

        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            opened.append(self)

        def close(self) -> None:
            super().close()
            self.closed = True

    monkeypatch.setattr(kafka_transport, "Consumer", _ClosingConsumer)
    namespace = f"missing{uuid.uuid4().hex[:6]}"  # no topics were created for it

    with pytest.raises(TopicsMissingError, match="topics create"):
        await Client.connect(kafka_bootstrap, namespace=namespace)

    assert [consumer.closed for consumer in opened] == [True]


def _single_object(schema: Any, record: dict[str, object]) -> bytes:
    """Avro single-object encoding, written here from the spec alone, as another language would."""
    parsed = fastavro.parse_schema(schema)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fingerprint = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    # fastavro spells the CRC-64-AVRO fingerprint in the little-endian byte order the
    # single-object header wants ("null" -> 8a8f25cce724dd63, the spec's test value).
    return b"\xc3\x01" + bytes.fromhex(fingerprint) + body.getvalue()


async def test_a_plain_producer_with_only_the_avsc_files_starts_a_workflow(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: Worker
) -> None:
    envelope = _current("chronik.InboxEnvelope")
    workflow_id = f"foreign-{uuid.uuid4().hex[:6]}"
    start = {
        "workflow_id": workflow_id,
        "workflow_type": "process_order",
        "task_queue": "orders",
        "input": [{"encoding": "json/plain", "data": json.dumps("F-1").encode()}],
        "request_id": uuid.uuid4().hex,
    }
    value = _single_object(envelope, {"message": ("chronik.StartWorkflow", start)})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(TopicNames(topics_ready).inbox, key=workflow_id.encode(), value=value)
    producer.flush(10)
    result = await client.get_workflow_handle(workflow_id).result()
    assert result == ["payment-F-1", "reservation-F-1", "shipment-F-1", "confirmation-F-1"]


def _current(name: str) -> Any:
    """The version ``CURRENT`` names, as docs/topics.md says: the files are named by
    fingerprint, in no order of age (sorted, the last Reply file was the oldest), and the
    oldest inbox schema has no await_result, which fastavro drops without a word."""
    versions = AVRO_DIR / "versions" / name
    return json.loads((versions / f"{(versions / 'CURRENT').read_text().strip()}.avsc").read_text())


def _one_reply(bootstrap: str, topic: str, client_id: str) -> dict[str, Any]:
    """The first record for ``client_id`` on its replies partition, decoded with nothing but
    the `.avsc` files: the writer schema by the header's fingerprint, `CURRENT` as reader."""
    writers = {
        path.stem: fastavro.parse_schema(json.loads(path.read_text()))
        for path in (AVRO_DIR / "versions" / "chronik.Reply").glob("*.avsc")
    }
    newest = fastavro.parse_schema(_current("chronik.Reply"))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    consumer.assign([TopicPartition(topic, partition_for(client_id, 4), OFFSET_BEGINNING)])
    try:
        for _ in range(120):
            record = consumer.poll(0.5)
            if record is None or record.error() is not None or record.key() != client_id.encode():
                continue
            data = record.value()
            assert data is not None and data[:2] == b"\xc3\x01"
            reply = fastavro.schemaless_reader(
                io.BytesIO(data[10:]),
                writers[data[2:10].hex()],
                newest,
                return_record_name=True,  # which body: the union's branch by name
                return_record_name_override=True,  # but a nullable record plain
            )
            assert isinstance(reply, dict)
            return reply
    finally:
        consumer.close()
    raise AssertionError(f"no reply for {client_id} on {topic}")


async def test_a_plain_producer_awaits_the_outcome_and_decodes_the_reply_from_the_avsc_files(
    kafka_bootstrap: str, topics_ready: str, order_worker: Worker
) -> None:
    """`reply_to` with `await_result`: the one answer is the run's outcome, read by a plain
    consumer from the replies partition murmur2(client id) % N and decoded with the
    `.avsc` files alone (writer schema by the header's fingerprint, reader `CURRENT`)."""
    names = TopicNames(topics_ready)
    client_id, request_id = f"foreign-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    workflow_id = f"foreign-await-{uuid.uuid4().hex[:6]}"
    start = {
        "workflow_id": workflow_id,
        "workflow_type": "process_order",
        "task_queue": "orders",
        "input": [{"encoding": "json/plain", "data": b'"F-2"'}],
        "request_id": request_id,
        "reply_to": client_id,
        "await_result": True,
    }
    value = _single_object(
        _current("chronik.InboxEnvelope"), {"message": ("chronik.StartWorkflow", start)}
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(names.inbox, key=workflow_id.encode(), value=value)
    producer.flush(10)
    answer = await asyncio.to_thread(_one_reply, kafka_bootstrap, names.replies, client_id)
    assert answer["request_id"] == request_id
    body_type, body = answer["body"]
    assert body_type == "chronik.WorkflowOutcome" and body["status"] == "completed"
    assert json.loads(body["result"]["data"]) == [
        "payment-F-2", "reservation-F-2", "shipment-F-2", "confirmation-F-2",
    ]  # fmt: skip


async def test_our_producers_and_javas_partitioner_agree_on_a_workflows_partition(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: Worker
) -> None:
    names = TopicNames(topics_ready)
    workflow_id = "where-am-i"
    handle = await client.start_workflow(
        order.process_order, "p", id=workflow_id, task_queue="orders"
    )
    await handle.result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(names.inbox, key=workflow_id.encode(), value=b"second producer")
    producer.flush(10)
    records = [
        r for r in read_topic(kafka_bootstrap, names.inbox) if r.key() == workflow_id.encode()
    ]
    partitions = {r.partition() for r in records}
    # The client's start, the plain producer's record, and the worker's activity reports.
    assert b"second producer" in {r.value() for r in records}
    assert len(records) >= 3
    # partition_for is Java's Utils.murmur2 + toPositive, checked against Java's vectors.
    assert partitions == {partition_for(workflow_id, 4)}


async def test_history_tail_prints_one_json_line_per_event(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: Worker
) -> None:
    workflow_id = f"tailed-{uuid.uuid4().hex[:6]}"
    await client.execute_workflow(order.process_order, "t", id=workflow_id, task_queue="orders")
    completed = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "workers.cli",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--namespace",
            topics_ready,
            "history",
            "tail",
            "--workflow",
            workflow_id,
            "--from-beginning",
            "--idle-exit",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert events[0]["workflow_id"] == workflow_id
    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "WorkflowCompleted"
    # What the tail printed is a history the Replayer takes as it is.
    replayed = Replayer(order.WORKFLOWS).replay_workflow(history_from_json(completed.stdout))
    assert replayed.status == WorkflowStatus.COMPLETED
    assert replayed.events == len(events)
