"""Listing a namespace's workflows from the status topic: `Client.list_workflows` and
``chronik workflow list``, against worker processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from runtime.client import Client
from runtime.errors import WorkflowFailureError
from runtime.messages import StatusRecord, WorkflowStatus
from tests.engine.steps import STEPS
from tests.integration import drift_v1, drift_v2
from tests.integration.conftest import Launcher
from topics.catalogue import TopicNames
from topics.partitioner import producer_config
from workers.worker import Worker

pytestmark = pytest.mark.kafka


async def _listed(client: Client, **filters: object) -> list[StatusRecord]:
    return [record async for record in client.list_workflows(**filters)]  # type: ignore[arg-type]


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes | None) -> None:
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


async def test_the_namespace_s_workflows_newest_first_filtered_and_without_retired_ones(
    kafka_bootstrap: str, topics_ready: str, client: Client, launch: Launcher
) -> None:
    launch.worker(role="all", worker_id="lister", modules=("examples.order", "examples.approval"))
    for number in (1, 2):
        await client.execute_workflow("process_order", f"O-{number}", id=f"order-{number}",
                                      task_queue="orders")  # fmt: skip
    await client.start_workflow("Approval", "R-1", id="approval-1", task_queue="orders")
    with pytest.raises(WorkflowFailureError):  # an int where the order id is a str
        await client.execute_workflow("process_order", 7, id="order-bad", task_queue="orders")

    everything = await _listed(client)
    assert [r.workflow_id for r in everything] == ["order-bad", "approval-1", "order-2", "order-1"]
    assert [r.status for r in everything] == [
        WorkflowStatus.FAILED, WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED,
        WorkflowStatus.COMPLETED,
    ]  # fmt: skip
    assert everything[0].failure is not None
    running = await _listed(client, status=WorkflowStatus.RUNNING)
    assert [(r.workflow_id, r.workflow_type) for r in running] == [("approval-1", "Approval")]
    closed = await _listed(client, status=[WorkflowStatus.FAILED, WorkflowStatus.COMPLETED])
    assert {r.workflow_id for r in closed} == {"order-1", "order-2", "order-bad"}
    assert [r.workflow_id for r in await _listed(client, workflow_type="Approval")] == [
        "approval-1"
    ]
    assert await _listed(client, task_queue="elsewhere") == []

    # A retired workflow's tombstone removes it; a record no reader can decode is left out.
    status_topic = TopicNames(topics_ready).status
    _produce(kafka_bootstrap, status_topic, b"order-1", None)
    _produce(kafka_bootstrap, status_topic, b"from-a-foreign-producer", b"not avro")
    assert [r.workflow_id for r in await _listed(client)] == ["order-bad", "approval-1", "order-2"]

    command = [sys.executable, "-m", "workers.cli", "--bootstrap-servers", kafka_bootstrap,
               "--namespace", topics_ready, "workflow", "list"]  # fmt: skip
    shown = await asyncio.to_thread(
        subprocess.run, [*command, "--status", "running", "--status", "failed"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(line["workflow_id"], line["status"]) for line in lines] == [
        ("order-bad", "failed"), ("approval-1", "running"),
    ]  # fmt: skip
    limited = await asyncio.to_thread(
        subprocess.run, [*command, "--limit", "1"], capture_output=True, text=True, timeout=120
    )
    assert [json.loads(line)["workflow_id"] for line in limited.stdout.splitlines()] == [
        "order-bad"
    ]


async def test_a_run_whose_task_fails_is_listed_and_described_until_fixed_code_resumes_it(
    client: Client, kafka_bootstrap: str, topics_ready: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))

    def worker(workflow_class: type) -> Worker:
        return Worker(client, task_queue="drift", workflows=[workflow_class], activities=STEPS)

    handle = client.get_workflow_handle("drifting")
    async with worker(drift_v1.Drifting):
        await client.start_workflow(drift_v1.Drifting.run, id="drifting", task_queue="drift")
        await drift_v1.until_first_step_done(handle)
    async with worker(drift_v2.Drifting):
        described = await handle.describe()  # the broken code replays the history: stuck
        assert described.status is WorkflowStatus.RUNNING and described.task_failure is not None
        assert described.task_failure.type == "NonDeterminismError"
        assert "step_a" in described.task_failure.message  # names what the history holds
        assert [r.workflow_id for r in await _listed(client, task_failing=True)] == ["drifting"]
        command = [sys.executable, "-m", "workers.cli", "--bootstrap-servers", kafka_bootstrap,
                   "--namespace", topics_ready, "workflow", "list", "--task-failing"]  # fmt: skip
        shown = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=120
        )
        assert shown.returncode == 0, shown.stderr
        [line] = [json.loads(line) for line in shown.stdout.splitlines()]
        assert line["workflow_id"] == "drifting"
        assert line["task_failure"]["type"] == "NonDeterminismError"
    async with worker(drift_v1.Drifting):  # fixed code: the run goes on where it stood
        assert (await handle.describe()).task_failure is None
        [record] = await _listed(client)  # the status topic heard of it too
        assert record.status is WorkflowStatus.RUNNING and record.task_failure is None
        await handle.signal(drift_v1.Drifting.go)
        assert await handle.result() == "a"
    assert await _listed(client, task_failing=True) == []
    [record] = await _listed(client)
    assert record.status is WorkflowStatus.COMPLETED and record.task_failure is None
