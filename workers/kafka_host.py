"""Run a `WorkerSpec` against Kafka: the workflow worker, the activity worker, or both.

`workers.worker.Worker` calls `run_kafka_worker` when its client talks to Kafka; the
``chronik worker`` command calls it too. The workflow worker's loop is blocking
(confluent-kafka), so it runs in its own thread — a thread of its own, not one of the
event loop's default pool, which an application embedding `Worker` (and its activities,
through `asyncio.to_thread`) may keep busy: the worker then never started. The activity
worker is asyncio. Cancelling the coroutine stops both cleanly.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from runtime.client import Client
from runtime.kafka_transport import KafkaTransport
from runtime.worker_spec import WorkerSpec
from topics.admin import TopicAdmin
from topics.catalogue import TopicNames
from workers.activity_worker import ActivityWorker, ActivityWorkerConfig
from workers.membership import Member
from workers.metrics import ActivityWorkerMetrics, WorkflowWorkerMetrics
from workers.workflow_worker import WorkflowWorker, WorkflowWorkerConfig

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where the worker's Kafka is: all a worker needs of a client's connection.

    ``chronik worker`` builds it from its options and never connects a `Client`: a client's
    reply reader and delivery poller are two threads that a worker process would feed for
    nothing (they took a tenth of the workflow worker's CPU samples under load).
    """

    bootstrap_servers: str
    namespace: str
    kafka_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, client: Client) -> Cluster:
        transport = client.transport
        if not isinstance(transport, KafkaTransport):
            raise TypeError("a Kafka worker needs a client made by Client.connect(...)")
        return cls(transport.bootstrap_servers, transport.namespace, transport.kafka_config)


class Role(StrEnum):
    ALL = "all"
    WORKFLOW = "workflow"
    ACTIVITY = "activity"


def default_retention_s() -> float:
    """``CHRONIK_RETENTION_SECONDS``, else 7 days: how long closed workflows are kept."""
    return float(os.environ.get("CHRONIK_RETENTION_SECONDS", str(7 * 24 * 3600)))


def default_state_dir() -> Path:
    """``CHRONIK_STATE_DIR``, else ``.chronik/state``; each worker id gets its own folder.

    A stable worker id therefore keeps its stores across restarts, and a restart restores
    only the tail of the history instead of all of it.
    """
    return Path(os.environ.get("CHRONIK_STATE_DIR", ".chronik/state"))


async def run_kafka_worker(
    cluster: Cluster,
    spec: WorkerSpec,
    *,
    role: Role = Role.ALL,
    worker_id: str | None = None,
    state_dir: Path | None = None,
    fire_timers: bool = True,
    retention_s: float | None = None,
    metrics: CollectorRegistry | None = None,
) -> None:
    """Run until cancelled. ``fire_timers=False`` leaves timers to `chronik timers`;
    ``metrics``: the registry the workers' metrics join (`workers.metrics`).

    Raises `TopicsMissingError` at once when the namespace has no topics: subscribed to
    topics that do not exist, the worker would wait for nothing, looking healthy.
    """
    member = Member.resolve(
        cluster.bootstrap_servers, cluster.namespace, cluster.kafka_config, worker_id
    )
    retention = retention_s if retention_s is not None else default_retention_s()
    names = TopicNames(cluster.namespace)
    loop = asyncio.get_running_loop()
    own_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chronik-workflow")
    registry = metrics if metrics is not None else CollectorRegistry()  # unserved: not given
    measured: list[WorkflowWorkerMetrics | ActivityWorkerMetrics] = []
    try:
        await loop.run_in_executor(
            own_thread,
            TopicAdmin(member.client_config()).require,
            cluster.namespace,
            [names.inbox, names.history, names.timers, names.replies, names.status],
        )
        jobs: list[asyncio.Future[None]] = []
        stop_thread = threading.Event()
        stop_async = asyncio.Event()
        if role in (Role.ALL, Role.WORKFLOW) and spec.workflows:
            workflow_metrics = WorkflowWorkerMetrics(registry)
            measured.append(workflow_metrics)
            workflow_worker = WorkflowWorker(
                WorkflowWorkerConfig(
                    member=member,
                    state_dir=(state_dir or default_state_dir()) / member.worker_id,
                    fire_timers=fire_timers,
                    retention_ms=round(retention * 1000),
                ),
                spec.workflow_registry(),
                workflow_metrics,
            )
            jobs.append(loop.run_in_executor(own_thread, workflow_worker.run, stop_thread))
        if role in (Role.ALL, Role.ACTIVITY) and spec.activities:
            activity_metrics = ActivityWorkerMetrics(registry)
            measured.append(activity_metrics)
            activity_worker = ActivityWorker(
                ActivityWorkerConfig(
                    member=member,
                    task_queue=spec.task_queue,
                    max_concurrent=spec.max_concurrent_activities,
                    executor=spec.activity_executor,
                    graceful_shutdown_s=spec.graceful_shutdown_timeout.total_seconds(),
                ),
                spec.activity_registry(),
                spec.data_converter,
                activity_metrics,
            )
            jobs.append(asyncio.ensure_future(activity_worker.run(stop_async)))
        if not jobs:
            raise ValueError(f"nothing to run for role {role.value!r}: no workflows or activities")
        try:
            # The first job to end (normally: none) ends the worker; its error is raised.
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            for job in done:
                job.result()
        finally:
            stop_thread.set()
            stop_async.set()
            await asyncio.gather(*jobs, return_exceptions=True)
            log.info("worker stopped", worker_id=member.worker_id)
    finally:
        for leaving in measured:  # a worker run again registers the same names anew
            leaving.close()
        own_thread.shutdown(wait=False)
