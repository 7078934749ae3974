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
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

from workers.partition import Tally

#: Seconds: a transaction takes milliseconds, a restore up to minutes.
_COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RESTORE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)
#: An activity takes anything from a millisecond to hours.
_ACTIVITY_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
_RECORD_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)

_C = TypeVar("_C", bound=Collector)


class _Metrics:
    """Metrics that leave their registry on `close`: a worker run again (an embedded
    `Worker` entered twice) registers the same names anew."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._collectors: list[Collector] = []

    def close(self) -> None:
        for collector in self._collectors:
            self._registry.unregister(collector)
        self._collectors.clear()

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return self._keep(Counter(name, doc, labels, registry=self._registry))

    def _histogram(
        self, name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
    ) -> Histogram:
        return self._keep(Histogram(name, doc, labels, buckets=buckets, registry=self._registry))

    def _gauge(self, name: str, doc: str) -> Gauge:
        return self._keep(Gauge(name, doc, registry=self._registry))

    def _keep(self, collector: _C) -> _C:
        self._collectors.append(collector)
        return collector


class WorkflowWorkerMetrics(_Metrics):
    """The partition owner's: messages, workflows, transactions, restores, memory."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.messages = self._counter(
            "chronik_inbox_messages", "Inbox records processed (committed)."
        )
        self.dead_letters = self._counter(
            "chronik_dead_letters", "Inbox records sent to the dead-letter topic."
        )
        self.started = self._counter(
            "chronik_workflows_started", "Workflow runs started.", ("workflow_type",)
        )
        self.closed = self._counter(
            "chronik_workflows_closed", "Workflow runs closed, by how.",
            ("workflow_type", "status"),
        )  # fmt: skip
        self.task_failures = self._counter(
            "chronik_workflow_task_failures",
            "Workflow tasks failed: code that cannot follow its history, or an unknown type.",
            ("workflow_type",),
        )
        self.transactions = self._counter(
            "chronik_transactions", "Kafka transactions, by outcome.", ("outcome",)
        )
        self.commit_seconds = self._histogram(
            "chronik_transaction_seconds", "From a transaction's start to its commit.",
            _COMMIT_BUCKETS,
        )  # fmt: skip
        self.transaction_records = self._histogram(
            "chronik_transaction_records", "Records written per transaction.", _RECORD_BUCKETS
        )
        self.restore_seconds = self._histogram(
            "chronik_restore_seconds",
            "Rebuilding or resuming the stores of newly owned partitions from the history topic.",
            _RESTORE_BUCKETS,
        )
        self.partitions = self._gauge("chronik_partitions_owned", "Inbox partitions owned.")
        self.cached = self._gauge("chronik_workflows_cached", "Workflows in memory.")

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


class ActivityWorkerMetrics(_Metrics):
    """The activity worker's: attempts by outcome, how long they run, how many run, and
    the threads of abandoned attempts that run on."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.attempts = self._counter(
            "chronik_activity_attempts", "Activity attempts finished, by outcome.",
            ("activity_type", "outcome"),
        )  # fmt: skip
        self.seconds = self._histogram(
            "chronik_activity_seconds", "How long an attempt ran.", _ACTIVITY_BUCKETS,
            ("activity_type",),
        )  # fmt: skip
        self.running = self._gauge(
            "chronik_activities_running", "Activity attempts running (not waiting for a slot)."
        )
        self.abandoned = self._gauge(
            "chronik_activity_threads_abandoned",
            "Threads of sync activity attempts abandoned past their cancellation grace "
            "that still run.",
        )
        self._attempts: dict[tuple[str, str], Counter] = {}
        self._seconds: dict[str, Histogram] = {}

    def watch(self, running: Callable[[], int], abandoned: Callable[[], int]) -> None:
        """The gauges read the worker's state when scraped (from the server's thread)."""
        self.running.set_function(running)
        self.abandoned.set_function(abandoned)

    def finished(self, activity_type: str, outcome: str, seconds: float) -> None:
        # On the path of every attempt: `labels()` takes a lock and builds a key each call
        # (8 µs for both here); a child kept per label costs a dict lookup.
        attempts = self._attempts.get((activity_type, outcome))
        if attempts is None:
            attempts = self._attempts[(activity_type, outcome)] = self.attempts.labels(
                activity_type, outcome
            )
        duration = self._seconds.get(activity_type)
        if duration is None:
            duration = self._seconds[activity_type] = self.seconds.labels(activity_type)
        attempts.inc()
        duration.observe(seconds)


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
