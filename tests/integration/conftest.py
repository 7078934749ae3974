"""Fixtures for end-to-end tests: a namespace with its topics, a client, worker processes.

The broker is the real one `tests/conftest.py` starts for the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime.client import Client
from tests.integration.processes import WorkerProcess
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
) -> Iterator[list[WorkerProcess]]:
    """Started processes are added here by `spawn_worker`; all are killed at the end."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.kill()


def spawn_worker(
    started: list[WorkerProcess],
    bootstrap: str,
    namespace: str,
    tmp_path: Path,
    *,
    role: str,
    worker_id: str,
    modules: tuple[str, ...] = ("tests.integration.ledger_workflows",),
    task_queue: str = "orders",
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    process = WorkerProcess(
        bootstrap=bootstrap,
        namespace=namespace,
        modules=modules,
        task_queue=task_queue,
        role=role,
        worker_id=worker_id,
        state_dir=tmp_path / "state",
        log_path=tmp_path / f"{worker_id}.log",
        env=env or {},
    ).start()
    started.append(process)
    return process
