"""The seed's workflows through the real broker, a worker in this process (issue 4)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from examples import order, transfer
from runtime import ActivityError, activity, workflow
from runtime.client import Client, WorkflowHandle
from runtime.errors import WorkflowFailureError, WorkflowNotFoundError
from runtime.events import ActivityScheduled, WorkflowCompleted, WorkflowFailed
from tests.integration.conftest import Launcher
from tests.integration.kafka_reading import read_topic
from topics.catalogue import TopicNames
from workers.worker import Worker

pytestmark = pytest.mark.kafka


@activity.defn
async def blob(size: int) -> str:
    return "b" * size


@workflow.defn
async def many_blobs(count: int, size: int) -> int:
    """A history larger than one Kafka record: ``count`` results of ``size`` bytes."""
    for _ in range(count):
        await workflow.execute_activity(blob, size, start_to_close_timeout=timedelta(seconds=30))
    return count


@pytest.fixture
async def running_worker(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    worker = Worker(
        client,
        task_queue="orders",
        workflows=[*order.WORKFLOWS, *transfer.WORKFLOWS, many_blobs],
        activities=[*order.ACTIVITIES, *transfer.ACTIVITIES, blob],
    )
    async with worker:
        yield worker


async def test_a_history_larger_than_a_record_is_fetched_whole(
    client: Client, running_worker: Worker
) -> None:
    workflow_id = f"blobs-{uuid.uuid4().hex[:8]}"
    assert (
        await client.execute_workflow(many_blobs, 5, 400_000, id=workflow_id, task_queue="orders")
        == 5
    )

    history = await client.get_workflow_handle(workflow_id).fetch_history()  # several pages

    assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    results = [e for e in history if type(e.attributes).__name__ == "ActivityCompleted"]
    assert len(results) == 5
    assert isinstance(history[-1].attributes, WorkflowCompleted)


async def test_order_workflow_runs_its_four_activities_in_order(
    client: Client, running_worker: Worker
) -> None:
    workflow_id = f"order-{uuid.uuid4().hex[:8]}"
    result = await client.execute_workflow(
        order.process_order, "A-17", id=workflow_id, task_queue="orders"
    )
    assert result == ["payment-A-17", "reservation-A-17", "shipment-A-17", "confirmation-A-17"]
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = [
        e.attributes.activity_type for e in history if isinstance(e.attributes, ActivityScheduled)
    ]
    assert scheduled == ["verify_payment", "reserve_inventory", "ship_order", "send_confirmation"]
    assert isinstance(history[-1].attributes, WorkflowCompleted)


async def test_transfer_saga_refunds_then_fails(client: Client, running_worker: Worker) -> None:
    workflow_id = f"transfer-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        transfer.transfer, "alice", "closed-bob", 10, id=workflow_id, task_queue="orders"
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, ActivityError)
    history = await handle.fetch_history()
    scheduled = [
        e.attributes.activity_type for e in history if isinstance(e.attributes, ActivityScheduled)
    ]
    assert scheduled == ["withdraw", "deposit", "refund"]  # AccountClosed is not retried
    assert isinstance(history[-1].attributes, WorkflowFailed)


async def test_transfer_between_open_accounts_completes(
    client: Client, running_worker: Worker
) -> None:
    result = await client.execute_workflow(
        transfer.transfer,
        "alice",
        "bob",
        5,
        id=f"transfer-{uuid.uuid4().hex[:8]}",
        task_queue="orders",
    )
    assert result == ["withdrew 5 from alice", "deposited 5 to bob"]


async def _until_collected(handle: WorkflowHandle, timeout_s: float = 30) -> None:
    """Until the workflow is gone: its status tombstoned, describe() finds nothing."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await handle.describe()
        except WorkflowNotFoundError:
            return
        assert asyncio.get_running_loop().time() < deadline, "never collected"
        await asyncio.sleep(0.5)


async def test_closed_workflows_are_collected_after_the_retention(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CHRONIK_RETENTION_SECONDS", "2")
    async with Worker(
        client, task_queue="orders", workflows=order.WORKFLOWS, activities=order.ACTIVITIES
    ):
        handle = await client.start_workflow(
            order.process_order, "gc", id="collected", task_queue="orders"
        )
        await handle.result()
        assert len(await handle.fetch_history()) == 10  # kept while within the retention
        await _until_collected(handle)
    live: dict[bytes, bytes | None] = {}
    for record in read_topic(kafka_bootstrap, TopicNames(topics_ready).history):
        live[record.key()] = record.value()  # what compaction will keep: the last per key
    assert [key for key, value in live.items() if value is not None] == []
    assert len(live) == 10  # every event of the workflow got its tombstone


async def test_a_worker_that_rebuilt_its_store_from_history_still_collects(
    client: Client,
    topics_ready: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retention timer rides on the closing history record: a rebuild brings it back."""
    monkeypatch.setenv("CHRONIK_RETENTION_SECONDS", "8")  # outlasts a worker start
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "first"))
    async with Worker(
        client, task_queue="orders", workflows=order.WORKFLOWS, activities=order.ACTIVITIES
    ):
        handle = await client.start_workflow(
            order.process_order, "gc", id="rebuilt-then-collected", task_queue="orders"
        )
        await handle.result()
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "second"))  # an empty store
    async with Worker(
        client, task_queue="orders", workflows=order.WORKFLOWS, activities=order.ACTIVITIES
    ):
        assert len(await handle.fetch_history()) == 10  # rebuilt, and not yet expired
        await _until_collected(handle)


async def test_seed_workflows_complete_through_separate_worker_processes(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    launch: Launcher,
) -> None:
    for role in ("workflow", "activity"):
        launch.worker(
            role=role,
            worker_id=f"seed-{role}",
            modules=("examples.order", "examples.transfer"),
        )
    receipts = await client.execute_workflow(
        order.process_order, "P-1", id="p-1", task_queue="orders"
    )
    assert receipts == ["payment-P-1", "reservation-P-1", "shipment-P-1", "confirmation-P-1"]
    with pytest.raises(WorkflowFailureError):
        await client.execute_workflow(
            transfer.transfer, "alice", "closed-carol", 3, id="saga-1", task_queue="orders"
        )
    history = await client.get_workflow_handle("saga-1").fetch_history()
    scheduled = [
        e.attributes.activity_type for e in history if isinstance(e.attributes, ActivityScheduled)
    ]
    assert scheduled == ["withdraw", "deposit", "refund"]
