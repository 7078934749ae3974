"""`chronik dlq redrive`: dead letters back onto the inbox, each once, through a real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from examples import order
from runtime.client import Client
from runtime.messages import StartWorkflow
from runtime.payloads import Payload
from tests.integration.conftest import PARTITIONS, Launcher
from tests.integration.kafka_reading import read_topic
from topics import dead_letters, serde, transient
from topics.catalogue import TopicNames
from topics.partitioner import partition_for, producer_config
from workers import dlq_redrive


@pytest.fixture
def order_worker(launch: Launcher) -> None:
    """A `chronik worker` process of the order example (`launch` stops it)."""
    launch.worker(role="all", worker_id="redrive-target", modules=("examples.order",))


def _dead_letter(
    bootstrap: str, names: TopicNames, key: bytes, value: bytes, *extra: tuple[str, bytes]
) -> None:
    """A dead letter as the workflow worker writes one: the record, why, where it was."""
    source = partition_for(key.decode(), PARTITIONS)
    headers: list[tuple[str, str | bytes | None]] = [
        (dead_letters.REASON, b"an earlier worker could not take it"),
        (dead_letters.TOPIC, names.inbox.encode()),
        (dead_letters.PARTITION, str(source).encode()),
        (dead_letters.OFFSET, b"0"),
        *extra,
    ]
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    producer.produce(names.inbox_dlq, key=key, value=value, headers=headers, partition=0)
    assert producer.flush(10) == 0


def _start(workflow_id: str) -> bytes:
    argument = Payload("json/plain", json.dumps("R-1").encode())
    start = StartWorkflow(workflow_id, "process_order", "orders", (argument,), uuid.uuid4().hex)
    return serde.encode_inbox(start)


async def _redrive(bootstrap: str, namespace: str, *options: str) -> list[dict[str, Any]]:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", "--bootstrap-servers", bootstrap,
         "--namespace", namespace, "dlq", "redrive", *options],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]


def _redriven(bootstrap: str, names: TopicNames) -> list[Any]:
    return [
        record
        for record in read_topic(bootstrap, names.inbox)
        if dead_letters.REDRIVEN_FROM in dict(record.headers() or [])
    ]


async def _dead_letter_redriven_from(
    bootstrap: str, names: TopicNames, where: str, timeout_s: float = 60
) -> Any:
    """The dead letter the workers wrote on refusing the record moved from ``where``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        for record in read_topic(bootstrap, names.inbox_dlq):
            if dict(record.headers()).get(dead_letters.REDRIVEN_FROM) == where.encode():
                return record
        assert asyncio.get_running_loop().time() < deadline, "never dead-lettered again"
        await asyncio.sleep(0.2)


async def test_dead_letters_move_back_onto_the_inbox_once_and_their_workflows_run(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: None
) -> None:
    names = TopicNames(topics_ready)
    workflow_id = f"redriven-{uuid.uuid4().hex[:6]}"
    _dead_letter(kafka_bootstrap, names, workflow_id.encode(), _start(workflow_id))
    _dead_letter(
        kafka_bootstrap,
        names,
        b"too-big",
        b"",
        (dead_letters.TRUNCATED, b"value"),
        (dead_letters.ORIGINAL_SIZE, b"1010001"),
    )

    # A dry run says what would happen and moves nothing.
    planned = await _redrive(kafka_bootstrap, topics_ready, "--dry-run")
    assert [(line["offset"], line["outcome"]) for line in planned] == [
        (0, "would move"),
        (1, "passed over"),
    ]
    assert planned[0]["destination"] == partition_for(workflow_id, PARTITIONS)
    assert "the original is at" in planned[1]["why"]
    assert _redriven(kafka_bootstrap, names) == []

    moved = await _redrive(kafka_bootstrap, topics_ready)
    assert [(line["offset"], line["outcome"]) for line in moved] == [
        (0, "moved"),
        (1, "passed over"),
    ]
    result = await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), 60)
    assert result[0] == "payment-R-1"
    [back] = _redriven(kafka_bootstrap, names)
    assert back.partition() == partition_for(workflow_id, PARTITIONS)
    assert dict(back.headers())[dead_letters.REDRIVEN_FROM] == f"{names.inbox_dlq}[0]@0".encode()

    # The cursor moved with the records: a second run has nothing to move.
    assert await _redrive(kafka_bootstrap, topics_ready) == []
    assert len(_redriven(kafka_bootstrap, names)) == 1


async def test_a_record_refused_again_returns_to_the_dead_letters_saying_it_was_redriven(
    client: Client, kafka_bootstrap: str, topics_ready: str, order_worker: None
) -> None:
    names = TopicNames(topics_ready)
    _dead_letter(kafka_bootstrap, names, b"garbage", b"\x00not avro at all")

    [line] = await _redrive(kafka_bootstrap, topics_ready)
    assert line["outcome"] == "moved"

    again = await _dead_letter_redriven_from(kafka_bootstrap, names, f"{names.inbox_dlq}[0]@0")
    headers = dict(again.headers())
    assert b"cannot decode" in headers[dead_letters.REASON]
    # Moved again on request only: the next run sees the new dead letter, not the old one.
    [line] = await _redrive(kafka_bootstrap, topics_ready, "--dry-run")
    assert (line["partition"], line["offset"]) == (again.partition(), again.offset())
    assert line["redriven_from"] == f"{names.inbox_dlq}[0]@0"


async def test_a_run_that_fails_mid_transaction_aborts_it_and_moves_nothing(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    order_worker: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left open, the failed transaction would hold the workflow workers' read_committed
    inbox consumer at its record for ``transaction.timeout.ms`` (a minute): a workflow on
    that partition completing within seconds shows it was aborted."""
    names = TopicNames(topics_ready)
    workflow_id = f"aborted-{uuid.uuid4().hex[:6]}"
    _dead_letter(kafka_bootstrap, names, workflow_id.encode(), _start(workflow_id))
    real_produce = transient.produce_when_room

    def produce_then_fail(*args: Any, **kwargs: Any) -> None:
        real_produce(*args, **kwargs)
        raise RuntimeError("injected after the record was produced")

    monkeypatch.setattr(dlq_redrive, "produce_when_room", produce_then_fail)
    with pytest.raises(dlq_redrive.RedriveError, match="injected"):
        await asyncio.to_thread(dlq_redrive.redrive, {"bootstrap.servers": kafka_bootstrap}, names)
    monkeypatch.undo()

    partition = partition_for(workflow_id, PARTITIONS)
    neighbour = next(
        f"n-{n}" for n in range(1_000) if partition_for(f"n-{n}", PARTITIONS) == partition
    )
    result = await asyncio.wait_for(
        client.execute_workflow(order.process_order, "N", id=neighbour, task_queue="orders"), 20
    )
    assert result[0] == "payment-N"
    assert _redriven(kafka_bootstrap, names) == []  # the aborted copy is not there
    [line] = await _redrive(kafka_bootstrap, topics_ready)  # the cursor did not move
    assert line["outcome"] == "moved"
    assert len(_redriven(kafka_bootstrap, names)) == 1
