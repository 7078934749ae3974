"""A worker that stops while an activity runs leaves that attempt to the next worker.

The stop gives running activities a graceful period, then cancels them. Reporting those as
"cancelled" spent the attempt: with ``maximum_attempts=1`` the workflow failed with a
cancellation nobody asked for, although the task's offset was meant to stay open so the
same attempt runs again on whichever worker takes the partition. An activity that ignores
its cancellation is abandoned, so that the worker (and its process) stops all the same.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from runtime import activity
from runtime.client import Client
from runtime.engine.activity_executor import CANCEL_GRACE_S
from runtime.messages import WorkflowStatus
from tests.integration import shutdown_activities
from tests.integration.conftest import Launcher
from tests.integration.processes import ChronikProcess
from tests.integration.shutdown_activities import ignores_cancellation, one_attempt
from workers.worker import Worker

pytestmark = pytest.mark.kafka

GRACEFUL_S = 0.2

#: Attempts seen, in order; the first one hangs until cancelled.
attempts: list[int] = []
first_started = asyncio.Event()


@activity.defn
async def long_job() -> str:
    attempts.append(activity.info().attempt)
    if len(attempts) == 1:
        first_started.set()
        await asyncio.sleep(3600)  # until the stop cancels it
    return "done"


def _hosting(client: Client, activities: list[Any]) -> Worker:
    return Worker(
        client,
        task_queue="stops",
        workflows=[one_attempt],
        activities=activities,
        graceful_shutdown_timeout=timedelta(seconds=GRACEFUL_S),
    )


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))


async def test_an_attempt_cut_short_by_a_stop_runs_again_on_the_next_worker(
    client: Client, state_dir: None
) -> None:
    attempts.clear()
    first_started.clear()

    async with _hosting(client, [long_job]):
        handle = await client.start_workflow(
            one_attempt, "long_job", id="stops-1", task_queue="stops"
        )
        await asyncio.wait_for(first_started.wait(), 60)
    async with _hosting(client, [long_job]):  # takes the partitions over, the task with them
        assert await asyncio.wait_for(handle.result(), 90) == "done"
    assert attempts == [1, 1]  # the same attempt, run again


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where `ignores_cancellation` notes each run; its thread is let go after the test."""
    path = tmp_path / "started"
    monkeypatch.setenv("CHRONIK_TEST_STARTED", str(path))
    shutdown_activities.released.clear()
    try:
        yield path
    finally:
        shutdown_activities.released.set()


async def test_a_stop_abandons_a_sync_activity_that_ignores_its_cancellation(
    client: Client, state_dir: None, started: Path
) -> None:
    """Waiting for it kept the worker from ever stopping. Abandoned, it is named in the
    log and reported as nothing — not even once its thread returns — so the same attempt
    runs again on the next worker, as any attempt a stop cut short does."""
    with capture_logs() as logs:
        async with _hosting(client, [ignores_cancellation]):
            handle = await client.start_workflow(
                one_attempt, "ignores_cancellation", id="stubborn-1", task_queue="stops"
            )
            [(key, _)] = await _runs(started, 1)
            stopped_at = time.monotonic()
    assert time.monotonic() - stopped_at < GRACEFUL_S + CANCEL_GRACE_S + 5
    [abandoned] = [entry for entry in logs if entry["event"].startswith("activity abandoned")]
    assert (abandoned["idempotency_key"], abandoned["reason"]) == (key, "stopping")
    assert abandoned["reported"] is False

    shutdown_activities.released.set()  # its late return must report nothing either
    async with _hosting(client, [ignores_cancellation]):
        assert await asyncio.wait_for(handle.result(), 90) == "done"
    assert [run_key for run_key, _ in _read_runs(started)] == [key, key]


async def test_a_worker_process_exits_though_a_sync_activity_ignores_its_cancellation(
    client: Client, launch: Launcher, tmp_path: Path
) -> None:
    """``chronik worker`` on SIGTERM: it waited for the activity's thread for good (Python
    joins a thread pool's threads at exit), so a deploy ended only with a SIGKILL."""
    started = tmp_path / "started"

    def worker(worker_id: str) -> ChronikProcess:
        return launch.worker(
            role="all",
            worker_id=worker_id,
            modules=("tests.integration.shutdown_activities",),
            task_queue="stops",
            env={"CHRONIK_TEST_STARTED": str(started)},
            extra_args=("--graceful-shutdown-timeout", str(GRACEFUL_S)),
        )

    first = worker("stubborn-a")
    handle = await client.start_workflow(
        one_attempt, "ignores_cancellation", id="stubborn-cli", task_queue="stops"
    )
    [(key, _)] = await _runs(started, 1)
    assert first.process is not None
    first.process.terminate()

    assert await asyncio.to_thread(first.process.wait, GRACEFUL_S + CANCEL_GRACE_S + 15) == 0
    [abandoned] = [e for e in _log(first) if e["event"].startswith("activity abandoned")]
    assert (abandoned["idempotency_key"], abandoned["reported"]) == (key, False)

    second = worker("stubborn-b")  # the attempt, not reported, runs again there
    assert (await _runs(started, 2))[1] == (key, str(second.pid))
    assert (await handle.describe()).status is WorkflowStatus.RUNNING


async def _runs(started: Path, count: int) -> list[tuple[str, str]]:
    """The (idempotency key, pid) of each run of `ignores_cancellation`, once ``count`` ran."""
    deadline = time.monotonic() + 60
    while len(runs := _read_runs(started)) < count:
        assert time.monotonic() < deadline, f"{count} runs of the activity expected: {runs}"
        await asyncio.sleep(0.1)
    return runs


def _read_runs(started: Path) -> list[tuple[str, str]]:
    lines = started.read_text().splitlines() if started.exists() else []
    return [(key, pid) for key, pid in (line.split() for line in lines)]


def _log(process: ChronikProcess) -> list[dict[str, Any]]:
    lines = process.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]
