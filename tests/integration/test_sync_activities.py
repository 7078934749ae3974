"""Sync activities run in the activity worker's own pool, never in the event loop's.

The worker polls Kafka through the event loop's default executor; sync activities that
filled that pool (6 threads on 2 cores) once stopped its polling, so no further task ran
and the group dropped the worker. Here more sync activities than that pool has threads
block, and another workflow's activity must still run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from runtime import activity, workflow
from runtime.client import Client
from workers.worker import Worker

pytestmark = pytest.mark.kafka

BLOCKED = 12  # twice the default pool of a 2-core machine (min(32, cores + 4))
release = threading.Event()


class _Entries:
    """Counts the blocking activities that hold a thread; tells the test's loop when all do."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.all_in = asyncio.Event()
        self._count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:  # on an activity's thread
        with self._lock:
            self._count += 1
            if self._count == BLOCKED:
                self.loop.call_soon_threadsafe(self.all_in.set)


entries: list[_Entries] = []


@pytest.fixture
def released() -> Iterator[None]:
    release.clear()
    try:
        yield
    finally:
        release.set()  # never leave a pool thread blocked


@activity.defn
def blocks() -> str:
    entries[-1].enter()
    release.wait(60)
    return "released"


@activity.defn
def quick() -> str:
    return "quick"


@workflow.defn
async def run_one(name: str) -> str:
    target = blocks if name == "blocks" else quick
    result: str = await workflow.execute_activity(
        target, start_to_close_timeout=timedelta(seconds=90)
    )
    return result


async def test_blocked_sync_activities_leave_the_poll_running(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, released: None
) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    entries.append(_Entries())
    async with Worker(client, task_queue="sync", workflows=[run_one], activities=[blocks, quick]):
        blocked = [
            await client.start_workflow(run_one, "blocks", id=f"blocked-{n}", task_queue="sync")
            for n in range(BLOCKED)
        ]
        await asyncio.wait_for(entries[-1].all_in.wait(), 60)  # each holds a thread now
        assert await client.execute_workflow(run_one, "quick", id="q", task_queue="sync") == (
            "quick"
        )
        release.set()
        assert [await handle.result() for handle in blocked] == ["released"] * BLOCKED


@activity.defn
async def blocks_in_a_thread() -> str:
    """An async activity calling blocking code the usual way: `asyncio.to_thread`, which
    runs in the event loop's default pool — the pool the worker used to poll through."""
    return await asyncio.to_thread(blocks)


@workflow.defn
async def run_one_async(name: str) -> str:
    target = blocks_in_a_thread if name == "blocks" else quick
    result: str = await workflow.execute_activity(
        target, start_to_close_timeout=timedelta(seconds=90)
    )
    return result


async def test_async_activities_blocking_in_the_default_pool_leave_the_poll_running(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, released: None
) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    entries.append(_Entries())
    async with Worker(
        client,
        task_queue="to-thread",
        workflows=[run_one_async],
        activities=[blocks_in_a_thread, quick],
    ):
        blocked = [
            await client.start_workflow(
                run_one_async, "blocks", id=f"blocked-{n}", task_queue="to-thread"
            )
            for n in range(BLOCKED)
        ]
        # The default pool has fewer threads than BLOCKED: wait until it is full.
        await asyncio.sleep(3)
        assert (
            await asyncio.wait_for(
                client.execute_workflow(run_one_async, "quick", id="q", task_queue="to-thread"),
                30,
            )
            == "quick"
        )
        release.set()
        assert [await handle.result() for handle in blocked] == ["released"] * BLOCKED


async def test_a_worker_starts_and_serves_while_the_default_pool_is_full(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, released: None
) -> None:
    """An application embedding `Worker` may keep its loop's default pool busy (blocking
    calls through `asyncio.to_thread`); the workflow worker's loop, which ran there for
    the worker's lifetime, then never started, nor did the activity worker's poll."""
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    hogs = [asyncio.ensure_future(asyncio.to_thread(release.wait, 60)) for _ in range(BLOCKED)]
    try:
        async with Worker(client, task_queue="busy", workflows=[run_one], activities=[quick]):
            run = client.execute_workflow(run_one, "quick", id="busy", task_queue="busy")
            assert await asyncio.wait_for(run, 30) == "quick"
    finally:
        release.set()
        await asyncio.gather(*hogs)
