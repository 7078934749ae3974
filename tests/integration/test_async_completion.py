"""An activity completed from outside through Kafka: a worker process goes asynchronous,
a client in another process (this one) completes the attempt by its task token."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.conftest import Launcher
from tests.integration.processes import run_chronik

pytestmark = pytest.mark.kafka


async def _token_lines(tokens: Path, count: int) -> list[str]:
    """The task tokens the worker wrote, once it wrote ``count`` (its process starts first)."""
    for _ in range(600):
        lines = _lines(tokens)
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} task tokens in {tokens}")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_an_attempt_a_worker_left_asynchronous_completes_from_another_client(
    client: Client, launch: Launcher, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    launch.worker(
        role="all",
        worker_id="async",
        modules=("tests.integration.async_activities",),
        env={"CHRONIK_TEST_TOKENS": str(tokens)},
    )
    handle = await client.start_workflow(
        "paid_by_callback", "O-7", id="callback-1", task_queue="orders"
    )
    [token] = await _token_lines(tokens, 1)
    [pending] = (await handle.describe()).pending_activities
    assert pending.activity_type == "request_callback"  # nothing was reported for it

    await client.get_async_activity_handle(token).complete("paid")
    assert await asyncio.wait_for(handle.result(), 60) == "O-7: paid"


async def _chronik(bootstrap: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await run_chronik(bootstrap, namespace, "activity", *args)


async def test_an_operator_completes_activities_by_token_or_by_workflow_and_seq(
    client: Client, launch: Launcher, tmp_path: Path, kafka_bootstrap: str, topics_ready: str
) -> None:
    tokens = tmp_path / "tokens"
    launch.worker(
        role="all",
        worker_id="async-cli",
        modules=("tests.integration.async_activities", "tests.integration.retrying_workflows"),
        env={"CHRONIK_TEST_TOKENS": str(tokens)},
    )
    by_token = await client.start_workflow(
        "paid_by_callback", "O-8", id="callback-2", task_queue="orders"
    )
    [token] = await _token_lines(tokens, 1)
    done = await _chronik(
        kafka_bootstrap, topics_ready, "complete", "--token", token, "--result", '"wired"'
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": "completed", **json.loads(token)}
    assert await asyncio.wait_for(by_token.result(), 60) == "O-8: wired"
    # The holder of that token, still working, hears on its heartbeat that it can stop.
    over = await _chronik(kafka_bootstrap, topics_ready, "heartbeat", "--token", token)
    assert over.returncode == 2
    assert "is no longer current: the run is completed" in over.stderr

    # An activity whose worker went asynchronous, resolved by hand from its describe().
    by_seq = await client.start_workflow(
        "paid_by_callback", "O-9", id="callback-3", task_queue="orders"
    )
    await _token_lines(tokens, 2)
    done = await _chronik(
        kafka_bootstrap, topics_ready, "complete", "callback-3", "1", "--result", '"by hand"'
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["attempt"] == 1
    assert await asyncio.wait_for(by_seq.result(), 60) == "O-9: by hand"

    # Between attempts the owner would ignore the report: refused, saying when to send it.
    charging = await client.start_workflow("charge", "4242", id="charge-4", task_queue="orders")
    for _ in range(300):  # until its first attempt failed
        pending = (await charging.describe()).pending_activities
        if pending and pending[0].last_failure is not None:
            break
        await asyncio.sleep(0.2)
    refused = await _chronik(
        kafka_bootstrap, topics_ready, "fail", "charge-4", "1", "--message", "x"
    )
    assert refused.returncode == 2
    assert "activity 1 of workflow 'charge-4' is between attempts: attempt 2" in refused.stderr
    missing = await _chronik(kafka_bootstrap, topics_ready, "heartbeat", "charge-4", "7")
    assert (missing.returncode, "has no open activity 7 (open: 1)") == (
        2,
        missing.stderr.split(") ", 1)[1].strip(),
    )
    await charging.terminate()
    bad = await _chronik(kafka_bootstrap, topics_ready, "complete", "--token", "nope")
    assert bad.returncode == 2 and "not a task token (not JSON)" in bad.stderr
