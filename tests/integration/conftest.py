"""Fixtures for end-to-end tests: a namespace with its topics, a client, worker processes.

The broker is the real one `tests/conftest.py` starts for the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
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


@dataclass
class Launcher:
    """Starts real `chronik` processes for one test; the `launch` fixture kills them after."""

    bootstrap: str
    namespace: str
    tmp_path: Path
    started: list[ChronikProcess] = field(default_factory=list)

    def worker(
        self,
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
            str(self.tmp_path / "state"),
            *extra_args,
        )
        return self._start(args, worker_id, env or {})

    def timer_service(self, worker_id: str) -> ChronikProcess:
        """``chronik timers``, the standalone timer service."""
        args = ("timers", "--worker-id", worker_id, "--state-dir", str(self.tmp_path / "state"))
        return self._start(args, worker_id, {})

    def _start(self, args: tuple[str, ...], name: str, env: dict[str, str]) -> ChronikProcess:
        log_path = self.tmp_path / f"{name}.log"
        process = ChronikProcess(self.bootstrap, self.namespace, args, log_path, env).start()
        self.started.append(process)
        return process


@pytest.fixture
def launch(kafka_bootstrap: str, topics_ready: str, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(kafka_bootstrap, topics_ready, tmp_path)
    yield launcher
    for process in launcher.started:
        process.kill()
