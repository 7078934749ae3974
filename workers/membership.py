"""Who a worker process is, where its cluster is, and how it joins consumer groups.

Every worker kind (workflow worker, activity worker, timer service) needs the same four
facts — bootstrap servers, namespace, its id, extra librdkafka settings — and joins its
group the same way, so a crashed worker's partitions move quickly: a worker killed with
``kill -9`` never leaves its group, the coordinator notices only when its session times
out, and a short session bounds that pause. A worker started with a stable id
(``--worker-id``, ``CHRONIK_WORKER_ID``) also joins as a *static* member: when it restarts,
it gets its partitions back at once, with no rebalance of the others.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import KafkaError

from runtime.logging import kafka_logger
from topics.consumed import FETCH_WAIT_MS
from topics.partitioner import producer_config
from topics.transient import is_fatal

SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 2_000
#: How long an open transaction of ours may last before the coordinator aborts it.
TRANSACTION_TIMEOUT_MS = 10_000

log = structlog.get_logger(__name__)


class WorkerFencedError(RuntimeError):
    """Another worker took over this worker's transactional id or partitions: stop."""


#: A producer's errors that say another producer took its transactional id: a second
#: process started with this worker's id (``init_transactions`` gave that one a newer epoch).
_PRODUCER_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


def fenced(worker_id: str, why: str) -> WorkerFencedError:
    """The error that stops a worker another process fenced: which worker, why, and the
    usual cause, in the one line `chronik worker` exits with for a supervisor to show."""
    return WorkerFencedError(
        f"worker {worker_id!r} was fenced: {why} (is another process running "
        "with the same --worker-id?)"
    )


def producer_stopped(error: KafkaError, worker_id: str) -> WorkerFencedError:
    """The error that stops a worker whose transactional producer reported ``error`` (fatal).

    A second process with the worker's id fences its producer as well as its consumer,
    and whichever the worker hears of first stops it: the producer's error (librdkafka's
    bare ``_FENCED: Failed to add offsets to transaction ...``) named neither the worker
    nor the cause the consumer's did. Any other fatal producer error is kept as it is.
    """
    if error.code() in _PRODUCER_FENCED:
        return fenced(worker_id, error.str())
    return WorkerFencedError(str(error))


def on_consume_error(error: KafkaError, worker_id: str) -> None:
    """Log a consumer's error, or stop the worker (`WorkerFencedError`) when it is fatal.

    A consumer's fatal error arrives as a record whose error has the code ``_FATAL``, and
    `KafkaError.fatal()` of that object is False (the flag belongs to the client's own
    fatal error): checking only ``fatal()`` kept a worker whose static membership another
    process with the same ``--worker-id`` had taken running for ever, logging "consume
    error" twice a poll and owning nothing, alive to every supervisor.
    """
    if is_fatal(error):
        raise fenced(worker_id, error.str())
    log.warning("consume error", error=str(error))


@dataclass(frozen=True, slots=True)
class Member:
    bootstrap_servers: str
    namespace: str
    #: The transactional id and the state directory derive from it.
    worker_id: str
    kafka: dict[str, Any] = field(default_factory=dict)
    #: The id survives restarts: join groups as a static member.
    stable_id: bool = False

    @classmethod
    def resolve(
        cls,
        bootstrap_servers: str,
        namespace: str,
        kafka: dict[str, Any],
        worker_id: str | None = None,
    ) -> Member:
        """An id given here or in ``CHRONIK_WORKER_ID`` is stable; else one per process."""
        chosen = worker_id or os.environ.get("CHRONIK_WORKER_ID")
        return cls(
            bootstrap_servers,
            namespace,
            chosen or f"{socket.gethostname()}-{os.getpid()}",
            {k: v for k, v in kafka.items() if k != "bootstrap.servers"},
            stable_id=chosen is not None,
        )

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings for any client of this worker (logs through ours)."""
        return {"bootstrap.servers": self.bootstrap_servers, "logger": kafka_logger(), **self.kafka}

    def group_config(self, group_id: str) -> dict[str, Any]:
        """A consumer of ``group_id``: short session, static when the id is stable."""
        config: dict[str, Any] = {
            **self.client_config(),
            "group.id": group_id,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        }
        if self.stable_id:
            config["group.instance.id"] = self.worker_id
        return config

    def transactional_producer_config(self, role: str) -> dict[str, Any]:
        """A transactional producer whose id survives restarts of this worker in ``role``.

        Right after a commit the coordinator may answer the next transaction's first request
        with CONCURRENT_TRANSACTIONS; librdkafka's default 100 ms backoff would then delay
        every other batch, so retries come after 5 ms.

        A transaction times out after 10 s, as in Kafka Streams under exactly-once, instead
        of librdkafka's 60 s: the open transaction of a worker that died holds its
        partitions' committed offsets (and read_committed readers of what it wrote) until
        the coordinator aborts it, so a takeover by another worker waited a minute. Ours
        last milliseconds; one that takes 10 s is aborted and the batch processed again.
        """
        return {
            **producer_config(self.client_config()),
            "transactional.id": f"{self.namespace}.{role}.{self.worker_id}",
            "retry.backoff.ms": 5,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
