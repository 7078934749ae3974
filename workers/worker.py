"""`Worker`: host workflows and activities of one task queue for a client.

With the in-memory client of `runtime.testing` it registers with that environment; with
any other transport it runs the Kafka host (`workers.kafka_host.run_kafka_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import timedelta
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from runtime.client import Client
from runtime.worker_spec import DEFAULT_GRACEFUL_SHUTDOWN, WorkerSpec


class Worker:
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        workflows: Sequence[Any] = (),
        activities: Sequence[Any] = (),
        activity_executor: Executor | None = None,
        max_concurrent_activities: int = 100,
        graceful_shutdown_timeout: timedelta = DEFAULT_GRACEFUL_SHUTDOWN,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """``graceful_shutdown_timeout``, as in Temporal: how long running activities may
        finish once the worker stops, before they are cancelled (on Kafka; the in-memory
        environment keeps them running). One that ignores its cancellation for 5 s more
        is abandoned, and its attempt runs again on another worker.

        ``metrics``: a Prometheus registry the worker's metrics join (on Kafka:
        `workers.metrics`), e.g. ``prometheus_client.REGISTRY``, which the application
        serves already; a worker started twice must be given a new registry each time."""
        self.client = client
        self.metrics = metrics
        self.spec = WorkerSpec(
            task_queue=task_queue,
            workflows=list(workflows),
            activities=list(activities),
            activity_executor=activity_executor,
            max_concurrent_activities=max_concurrent_activities,
            data_converter=client.data_converter,
            graceful_shutdown_timeout=graceful_shutdown_timeout,
        )
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Run until `shutdown()` or cancellation."""
        from runtime.testing import InMemoryTransport  # noqa: PLC0415 - tests only

        transport = self.client.transport
        if isinstance(transport, InMemoryTransport):
            transport.service.register_worker(self.spec)
            try:
                await self._stop.wait()
            finally:
                transport.service.unregister_worker(self.spec)
            return
        from workers.kafka_host import Cluster, run_kafka_worker  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

        runner = asyncio.ensure_future(
            run_kafka_worker(Cluster.of(self.client), self.spec, metrics=self.metrics)
        )
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not runner.done():
                runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def shutdown(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> Worker:
        self._task = asyncio.create_task(self.run())
        await asyncio.sleep(0)  # let it register before the block starts workflows
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
