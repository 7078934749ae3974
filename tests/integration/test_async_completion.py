"""An activity completed from outside through Kafka: a worker process goes asynchronous,
a client in another process (this one) completes the attempt by its task token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.conftest import Launcher

pytestmark = pytest.mark.kafka


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
    for _ in range(600):  # until the worker ran the attempt (its process starts first)
        if tokens.exists() and tokens.read_bytes().endswith(b"\n"):
            break
        await asyncio.sleep(0.1)
    [token] = tokens.read_bytes().splitlines()
    [pending] = (await handle.describe()).pending_activities
    assert pending.activity_type == "request_callback"  # nothing was reported for it

    await client.get_async_activity_handle(token).complete("paid")
    assert await asyncio.wait_for(handle.result(), 60) == "O-7: paid"
