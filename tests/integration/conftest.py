"""Fixtures for end-to-end tests: a namespace with its topics, a client, worker processes.

The broker is the real one `tests/conftest.py` starts for the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.processes import ChronikProcess
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue

PARTITIONS = 4


@pytest.fixture
def topics_ready(kafka_bootstrap: str, namespace: str) -> str:
    """Create the namespace's topics (few partitions: tests are small) and return it."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, PARTITIONS))
    return namespace


@pytest.fixture
async def client(kafka_bootstrap: str, topics_ready: str) -> AsyncIterator[Client]:
    connected = await Client.connect(kafka_bootstrap, namespace=topics_ready)
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def worker_processes(
    kafka_bootstrap: str, topics_ready: str, tmp_path: Path
) -> Iterator[list[ChronikProcess]]:
    """Started processes are added here by `spawn_worker`; all are killed at the end."""
    started: list[ChronikProcess] = []
    yield started
    for process in started:
        process.kill()


def spawn_worker(
    started: list[ChronikProcess],
    bootstrap: str,
    namespace: str,
    tmp_path: Path,
    *,
    role: str,
    worker_id: str,
    modules: tuple[str, ...] = ("tests.integration.ledger_workflows",),
    task_queue: str = "orders",
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> ChronikProcess:
    """``chronik worker MODULES`` with this test's state directory and log file."""
    args = (
        "worker",
        *modules,
        "--task-queue",
        task_queue,
        "--role",
        role,
        "--worker-id",
        worker_id,
        "--state-dir",
        str(tmp_path / "state"),
        *extra_args,
    )
    process = ChronikProcess(
        bootstrap, namespace, args, tmp_path / f"{worker_id}.log", env or {}
    ).start()
    started.append(process)
    return process


def spawn_timer_service(
    started: list[ChronikProcess], bootstrap: str, namespace: str, tmp_path: Path, worker_id: str
) -> ChronikProcess:
    """``chronik timers``, the standalone timer service."""
    args = ("timers", "--worker-id", worker_id, "--state-dir", str(tmp_path / "state"))
    process = ChronikProcess(bootstrap, namespace, args, tmp_path / f"{worker_id}.log").start()
    started.append(process)
    return process
