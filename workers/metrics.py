"""The workers' metrics, in the Prometheus text format (`chronik worker --metrics-port`).

What an operator watches that no topic shows: how much the workers do, how long a
transaction and a restore take, how many workflows are in memory, which activities fail
and how long they run. Everything a transaction did is counted once it committed
(`workers.partition.Tally`), so a step that aborted and ran again is counted once.

Each worker gets its own `CollectorRegistry`: several workers in one process (tests, an
embedded `Worker`) never share counters; `serve` exposes one registry over HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from workers.partition import Tally

#: Seconds: a transaction takes milliseconds, a restore up to minutes.
_COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RESTORE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)
#: An activity takes anything from a millisecond to hours.
_ACTIVITY_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
_RECORD_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)


class WorkflowWorkerMetrics:
    """The partition owner's: messages, workflows, transactions, restores, memory."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "chronik_inbox_messages", "Inbox records processed (committed).", registry=registry
        )
        self.dead_letters = Counter(
            "chronik_dead_letters", "Inbox records sent to the dead-letter topic.",
            registry=registry,
        )  # fmt: skip
        self.started = Counter(
            "chronik_workflows_started", "Workflow runs started.", ["workflow_type"],
            registry=registry,
        )  # fmt: skip
        self.closed = Counter(
            "chronik_workflows_closed", "Workflow runs closed, by how.",
            ["workflow_type", "status"], registry=registry,
        )  # fmt: skip
        self.task_failures = Counter(
            "chronik_workflow_task_failures",
            "Workflow tasks failed: code that cannot follow its history, or an unknown type.",
            ["workflow_type"], registry=registry,
        )  # fmt: skip
        self.transactions = Counter(
            "chronik_transactions", "Kafka transactions, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.commit_seconds = Histogram(
            "chronik_transaction_seconds", "From a transaction's start to its commit.",
            buckets=_COMMIT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.transaction_records = Histogram(
            "chronik_transaction_records", "Records written per transaction.",
            buckets=_RECORD_BUCKETS, registry=registry,
        )  # fmt: skip
        self.restore_seconds = Histogram(
            "chronik_restore_seconds", "Rebuilding or resuming the stores of newly owned "
            "partitions from the history topic.", buckets=_RESTORE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.partitions = Gauge(
            "chronik_partitions_owned", "Inbox partitions this worker owns.", registry=registry
        )
        self.cached = Gauge("chronik_workflows_cached", "Workflows in memory.", registry=registry)

    def watch(self, partitions: Callable[[], int], cached: Callable[[], int]) -> None:
        """The gauges read the worker's state when scraped (from the server's thread:
        each is a length, read atomically)."""
        self.partitions.set_function(partitions)
        self.cached.set_function(cached)

    def committed(self, tallies: Iterable[Tally], records: int, seconds: float) -> None:
        self.transactions.labels("committed").inc()
        self.commit_seconds.observe(seconds)
        self.transaction_records.observe(records)
        for tally in tallies:
            if tally.messages:
                self.messages.inc(tally.messages)
            if tally.dead_letters:
                self.dead_letters.inc(tally.dead_letters)
            for workflow_type, count in tally.started.items():
                self.started.labels(workflow_type).inc(count)
            for (workflow_type, status), count in tally.closed.items():
                self.closed.labels(workflow_type, status).inc(count)
            for workflow_type, count in tally.task_failures.items():
                self.task_failures.labels(workflow_type).inc(count)

    def aborted(self) -> None:
        self.transactions.labels("aborted").inc()


class ActivityWorkerMetrics:
    """The activity worker's: attempts by outcome, how long they run, how many run."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "chronik_activity_attempts", "Activity attempts finished, by outcome.",
            ["activity_type", "outcome"], registry=registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "chronik_activity_seconds", "How long an attempt ran.", ["activity_type"],
            buckets=_ACTIVITY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.running = Gauge(
            "chronik_activities_running", "Activity attempts running now.", registry=registry
        )

    def watch(self, running: Callable[[], int]) -> None:
        self.running.set_function(running)

    def finished(self, activity_type: str, outcome: str, seconds: float) -> None:
        self.attempts.labels(activity_type, outcome).inc()
        self.seconds.labels(activity_type).observe(seconds)


@dataclass
class MetricsServer:
    """The HTTP endpoint serving one registry at ``/metrics``; `close` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` (0: any free port) until closed."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
