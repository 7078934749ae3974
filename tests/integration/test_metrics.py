"""``chronik worker --metrics-port``: what the workers did, in Prometheus' text format."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from examples import order
from runtime import workflow
from runtime.client import Client
from runtime.errors import WorkflowFailureError
from tests.conftest import free_ports
from tests.integration.conftest import PARTITIONS, Launcher
from workers.worker import Worker

pytestmark = pytest.mark.kafka

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _until(port: int, check: Callable[[Samples], bool]) -> Samples:
    """The metrics once ``check`` holds: a commit's counts follow the replies it carried."""
    samples: Samples = {}
    for _ in range(200):
        try:
            samples = await asyncio.to_thread(_scrape, port)
        except OSError:  # not serving yet
            samples = {}
        if samples and check(samples):
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError(f"metrics never matched: {sorted(samples.items())}")


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_workflows_transactions_and_state_are_counted_once_committed(
    client: Client, launch: Launcher
) -> None:
    (port,) = free_ports(1)
    launch.worker(role="all", worker_id="measured", modules=("examples.order",),
                  extra_args=("--metrics-port", str(port)))  # fmt: skip
    for number in range(3):
        await client.execute_workflow(
            order.process_order, f"M-{number}", id=f"m-{number}", task_queue="orders"
        )
    with pytest.raises(WorkflowFailureError):  # an int where the order id is a str
        await client.execute_workflow("process_order", 7, id="m-bad", task_queue="orders")

    def counted(samples: Samples) -> bool:
        closed = "chronik_workflows_closed_total"
        return (  # the activity reports were committed before the closes they led to
            _value(samples, closed, workflow_type="process_order", status="completed") == 3
            and _value(samples, closed, workflow_type="process_order", status="failed") == 1
        )

    samples = await _until(port, counted)
    assert _value(samples, "chronik_workflows_started_total", workflow_type="process_order") == 4
    # Four starts, a report per activity (4 per completed run), and what else the runs got.
    assert _value(samples, "chronik_inbox_messages_total") >= 4 + 3 * 4
    assert _value(samples, "chronik_transactions_total", outcome="committed") >= 1
    assert _value(samples, "chronik_transactions_total", outcome="aborted") == 0
    assert _value(samples, "chronik_transaction_seconds_count") >= 1
    assert _value(samples, "chronik_partitions_owned") == PARTITIONS
    assert _value(samples, "chronik_restore_seconds_count") >= 1
    assert _value(samples, "chronik_dead_letters_total") == 0
    assert _value(samples, "chronik_workflow_task_failures_total") == 0
    for activity in ("verify_payment", "reserve_inventory", "ship_order", "send_confirmation"):
        attempts = "chronik_activity_attempts_total"
        assert _value(samples, attempts, activity_type=activity, outcome="completed") == 3
        assert _value(samples, "chronik_activity_seconds_count", activity_type=activity) == 3
    assert _value(samples, "chronik_activities_running") == 0


def test_a_metrics_port_already_taken_is_refused_in_one_line(
    kafka_bootstrap: str, topics_ready: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "workers.cli", "--bootstrap-servers", kafka_bootstrap,
             "--namespace", topics_ready, "worker", "examples.order", "-q", "orders",
             "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_embedded_worker_joins_the_application_s_registry_and_leaves_it(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    registry = CollectorRegistry()
    for run in range(2):  # the same registry again: the first run's metrics left it
        async with Worker(
            client, task_queue="orders", workflows=order.WORKFLOWS,
            activities=order.ACTIVITIES, metrics=registry,
        ):  # fmt: skip
            await client.execute_workflow(
                order.one_activity, id=f"embedded-{run}", task_queue="orders"
            )
            for _ in range(100):  # the commit's counts follow the reply it carried
                if registry.get_sample_value(
                    "chronik_workflows_closed_total",
                    {"workflow_type": "one_activity", "status": "completed"},
                ):
                    break
                await asyncio.sleep(0.1)
            assert registry.get_sample_value(
                "chronik_activity_attempts_total", {"activity_type": "noop", "outcome": "completed"}
            ) == 1  # fmt: skip
        started = {"workflow_type": "one_activity"}
        assert registry.get_sample_value("chronik_workflows_started_total", started) is None


@workflow.defn
class Handover:
    """Continues as new as another type: its close is the first type's, not the next's."""

    @workflow.run
    async def run(self) -> None:
        workflow.continue_as_new(workflow=HandedOver)


@workflow.defn
class HandedOver:
    @workflow.run
    async def run(self) -> str:
        return "done"


async def test_a_run_continued_as_another_type_is_closed_under_its_own_type(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    registry = CollectorRegistry()
    async with Worker(
        client, task_queue="handover", workflows=[Handover, HandedOver], metrics=registry
    ):
        assert await client.execute_workflow(Handover, id="handover", task_queue="handover")
        closed = "chronik_workflows_closed_total"
        for _ in range(100):  # the commit's counts follow the reply it carried
            if registry.get_sample_value(
                closed, {"workflow_type": "HandedOver", "status": "completed"}
            ):
                break
            await asyncio.sleep(0.1)
        by_type = {
            (sample.labels["workflow_type"], sample.labels["status"]): sample.value
            for family in registry.collect()
            if family.name == "chronik_workflows_closed"
            for sample in family.samples
            if sample.name == closed
        }
    assert by_type == {("Handover", "continued_as_new"): 1, ("HandedOver", "completed"): 1}
