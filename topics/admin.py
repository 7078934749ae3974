"""Create and validate a namespace's topics with the Kafka admin client.

Creation is idempotent: topics that exist with the right shape are left alone, missing
ones are created. An existing topic whose partition count (for the topics partitioned by
workflow id) or cleanup policy differs is refused before anything is created, because
running on it would break partition ownership or let compaction erase histories.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from topics.catalogue import Catalogue, TopicSpec
from topics.errors import KafkaUnavailableError, TopicMismatchError, TopicsMissingError

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class ExistingTopic:
    """What the cluster says about one topic."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One difference between the catalogue and the cluster.

    ``fatal`` differences (missing topic, partition count, cleanup policy) stop Chronik;
    the others (retention, replication factor) are worth a warning only.
    """

    topic: str
    setting: str
    expected: object
    actual: object
    fatal: bool

    def __str__(self) -> str:
        if self.setting == "exists":
            return f"{self.topic}: missing"
        return f"{self.topic}: {self.setting} is {self.actual}, expected {self.expected}"

    def error(self) -> TopicMismatchError:
        return TopicMismatchError(self.topic, self.setting, self.expected, self.actual)


def compare(spec: TopicSpec, existing: ExistingTopic | None) -> list[Mismatch]:
    """How an existing topic differs from its spec (pure: the admin client fetched it)."""
    if existing is None:
        return [Mismatch(spec.name, "exists", True, False, fatal=True)]
    found = []
    if existing.partitions != spec.partitions:
        found.append(
            Mismatch(
                spec.name,
                "partitions",
                spec.partitions,
                existing.partitions,
                fatal=spec.fixed_partitions,
            )
        )
    for name, value in spec.config.items():
        actual = existing.config.get(name)
        if actual != value:
            found.append(Mismatch(spec.name, name, value, actual, fatal=name == "cleanup.policy"))
    if existing.replication_factor != spec.replication_factor:
        found.append(
            Mismatch(
                spec.name,
                "replication.factor",
                spec.replication_factor,
                existing.replication_factor,
                fatal=False,
            )
        )
    return found


class TopicAdmin:
    """The namespace's topics on one cluster: describe, check, create."""

    def __init__(self, config: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._client = AdminClient(dict(config))
        self._timeout = timeout

    # --- reading ---------------------------------------------------------------------

    def describe(self, names: list[str]) -> dict[str, ExistingTopic]:
        """The topics among ``names`` that exist, with partitions and configuration."""
        try:
            metadata = self._client.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"no metadata from Kafka: {exc.args[0]}") from None
        present = {
            name: metadata.topics[name]
            for name in names
            if name in metadata.topics and metadata.topics[name].error is None
        }
        if not present:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
        futures = self._client.describe_configs(resources, request_timeout=self._timeout)
        out = {}
        for resource, future in futures.items():
            entries = _result(future, f"describe the configuration of {resource.name}")
            topic = present[resource.name]
            replicas = {len(p.replicas) for p in topic.partitions.values()}
            out[resource.name] = ExistingTopic(
                name=resource.name,
                partitions=len(topic.partitions),
                replication_factor=min(replicas) if replicas else 0,
                config={key: entry.value for key, entry in entries.items()},
            )
        return out

    def delete_retention_ms(self, names: list[str]) -> dict[str, int]:
        """How long each topic of ``names`` that exists keeps its tombstones, as the broker
        applies it (the topic's own setting, else the broker's default).

        A store away for longer may have missed tombstones (`workers.restore`)."""
        return {
            name: int(topic.config["delete.retention.ms"])
            for name, topic in self.describe(names).items()
            if topic.config.get("delete.retention.ms") is not None
        }

    def max_message_bytes(self, name: str) -> int | None:
        """The largest record batch the broker takes on topic ``name`` (its
        ``max.message.bytes``, else the broker's default); None when the topic does not
        exist. An operator may set it below what producers allow themselves, and the
        broker then refuses a larger batch whole (``MSG_SIZE_TOO_LARGE``)."""
        topic = self.describe([name]).get(name)
        if topic is None or topic.config.get("max.message.bytes") is None:
            return None
        return int(topic.config["max.message.bytes"])

    def require(self, namespace: str, names: list[str]) -> None:
        """Raise `TopicsMissingError` unless every topic of ``names`` exists: a process
        subscribed to a topic that does not exist would wait for nothing, looking healthy."""
        try:
            metadata = self._client.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"no metadata from Kafka: {exc.args[0]}") from None
        missing = [
            name
            for name in names
            if name not in metadata.topics or metadata.topics[name].error is not None
        ]
        if missing:
            raise TopicsMissingError(namespace, missing)

    def check(self, catalogue: Catalogue, *, infer_partitions: bool = False) -> list[Mismatch]:
        """Every difference between the namespace's topics and the catalogue.

        With ``infer_partitions``, the expected count is the existing inbox's, so a
        namespace created with any count checks clean as long as its topics agree.
        """
        specs = catalogue.topics()
        existing = self.describe([spec.name for spec in specs])
        inbox = existing.get(catalogue.names.inbox)
        if infer_partitions and inbox is not None:
            catalogue = dataclasses.replace(catalogue, partitions=inbox.partitions)
            specs = catalogue.topics()
        return [m for spec in specs for m in compare(spec, existing.get(spec.name))]

    # --- writing ---------------------------------------------------------------------

    def create(self, catalogue: Catalogue, *, infer_partitions: bool = False) -> list[str]:
        """Create what is missing; returns the topics created (empty when all existed).

        Raises :class:`TopicMismatchError` for the first existing topic Chronik cannot
        use, before creating anything. With ``infer_partitions``, a namespace whose inbox
        exists keeps the inbox's partition count (what `check` expects then too), so
        creating again without naming the count is idempotent for any count.
        """
        return self._ensure(list(self.resolve(catalogue, infer_partitions).topics()))[0]

    def resolve(self, catalogue: Catalogue, infer_partitions: bool) -> Catalogue:
        """``catalogue``, with the existing inbox's partition count if asked to infer it."""
        if not infer_partitions:
            return catalogue
        inbox = self.describe([catalogue.names.inbox]).get(catalogue.names.inbox)
        if inbox is None:
            return catalogue
        return dataclasses.replace(catalogue, partitions=inbox.partitions)

    def group_has_members(self, group: str) -> bool | None:
        """Whether consumer group ``group`` has a member now; None when Kafka does not say.

        For warnings only (a task queue nobody polls), so a failure to ask is no error.
        """
        try:
            futures = self._client.describe_consumer_groups([group], request_timeout=self._timeout)
            description = futures[group].result()
        except KafkaException:
            return None
        return bool(description.members)

    def ensure_task_queue(self, catalogue: Catalogue, queue: str) -> int:
        """Create the topic of ``queue`` unless it exists; its partition count either way.

        An existing task topic may have any count (tasks go to any partition), so the count
        is the cluster's, learnt by the same describe that found the topic missing or not.
        """
        spec = catalogue.task_queue(queue)
        _, partitions = self._ensure([spec])
        return partitions[spec.name]

    def _ensure(self, specs: list[TopicSpec]) -> tuple[list[str], dict[str, int]]:
        """Create the missing ``specs``: (the topics created, every spec's partition count)."""
        existing = self.describe([spec.name for spec in specs])
        for spec in specs:
            if spec.name in existing:
                _refuse_fatal(compare(spec, existing[spec.name]))
        partitions = {name: info.partitions for name, info in existing.items()}
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return [], partitions
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                config=dict(s.config),
            )
            for s in missing
        ]
        futures = self._client.create_topics(
            new, operation_timeout=self._timeout, request_timeout=self._timeout
        )
        created, raced = [], []
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaUnavailableError(f"cannot create {name}: {exc.args[0]}") from None
                raced.append(name)  # another process created it meanwhile: validate it
        partitions.update({spec.name: spec.partitions for spec in missing})
        if raced:
            now = self.describe(raced)
            for spec in missing:
                if spec.name in now:
                    _refuse_fatal(compare(spec, now[spec.name]))
                    partitions[spec.name] = now[spec.name].partitions
        self._wait_for_leaders(created)
        return created, partitions

    def _wait_for_leaders(self, names: list[str]) -> None:
        """Return once every partition of ``names`` has a leader (so producing works), or
        after the timeout with a warning that names the partitions still without one.

        A created topic is there either way, and a record for a leaderless partition waits
        in the producer until it has one; but an overloaded or stalled broker is what an
        operator wants to hear of, not a worker that seems slow for no reason.
        """
        deadline = time.monotonic() + self._timeout
        leaderless: dict[str, list[int]] = {}
        while names:
            metadata = self._client.list_topics(timeout=self._timeout)
            leaderless = {}
            for name in names:
                topic = metadata.topics.get(name)
                partitions = topic.partitions if topic is not None else {}
                waiting = sorted(n for n, p in partitions.items() if p.leader < 0)
                if not partitions or waiting:
                    leaderless[name] = waiting
            if not leaderless:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if leaderless:
            log.warning(
                "created topics still have partitions without a leader: producing to them "
                "waits until the broker elects one",
                seconds=self._timeout,
                topics={name: waiting or "no metadata yet" for name, waiting in leaderless.items()},
            )


def _refuse_fatal(mismatches: list[Mismatch]) -> None:
    for mismatch in mismatches:
        if mismatch.fatal:
            raise mismatch.error()


def _result(future: Any, what: str) -> Any:
    try:
        return future.result()
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot {what}: {exc.args[0]}") from None
