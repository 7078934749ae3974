"""The topic table of DESIGN.md as data: names, partition counts, cleanup and retention.

Everything that names a topic or a consumer group asks :class:`TopicNames`, so a namespace
is one prefix and nothing else; everything that creates or checks topics asks
:class:`Catalogue`. Inbox, history, timers and status share one partition count: partition
*p* of each belongs to the same owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_NAMESPACE = "chronik"
#: Partitions of inbox/history/timers/status: the ceiling on workflow-worker parallelism.
#: It cannot be changed later without moving every workflow, so it errs on the high side.
DEFAULT_PARTITIONS = 12
#: 1 suits a single local broker; production clusters want 3 (with min.insync.replicas=2).
DEFAULT_REPLICATION_FACTOR = 1

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

#: The largest record (key + value) a Chronik process writes. librdkafka's default
#: ``message.max.bytes`` (1,000,000, under the topics' default ``max.message.bytes``,
#: 1,048,588) bounds a whole batch: its 61-byte header and each record's framing count
#: too, and a 36-byte key with a 999,930-byte value was refused. Writers check against
#: this, 1,000 bytes below (room for the framing and a few headers), and say why; a
#: record the producer refused inside a workflow worker's transaction would fail that
#: transaction every time it was tried again.
MAX_RECORD_BYTES = 999_000

_TASKS_INFIX = ".tasks."


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Topic and consumer-group names of one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def inbox(self) -> str:
        return f"{self.namespace}.inbox"

    @property
    def history(self) -> str:
        return f"{self.namespace}.history"

    @property
    def timers(self) -> str:
        return f"{self.namespace}.timers"

    @property
    def status(self) -> str:
        return f"{self.namespace}.status"

    @property
    def replies(self) -> str:
        return f"{self.namespace}.replies"

    @property
    def inbox_dlq(self) -> str:
        return f"{self.namespace}.inbox.dlq"

    def tasks(self, queue: str) -> str:
        """The topic of one activity task queue, created on demand."""
        if not queue or any(c not in _LEGAL for c in queue):
            raise ValueError(f"task queue {queue!r}: use letters, digits, '.', '_' and '-'")
        return f"{self.namespace}{_TASKS_INFIX}{queue}"

    def is_task_topic(self, topic: str) -> bool:
        return topic.startswith(f"{self.namespace}{_TASKS_INFIX}")

    def queue_of(self, topic: str) -> str:
        """The task queue of a task topic of this namespace."""
        if not self.is_task_topic(topic):
            raise ValueError(f"{topic} is not a task topic of namespace {self.namespace}")
        return topic[len(self.namespace) + len(_TASKS_INFIX) :]

    @property
    def workflow_group(self) -> str:
        """Consumer group of the workflow workers (partition owners of the inbox)."""
        return f"{self.namespace}.workflow-workers"

    def activity_group(self, queue: str) -> str:
        """Consumer group of the activity workers of one task queue."""
        return f"{self.namespace}.activity-workers.{queue}"

    @property
    def timer_group(self) -> str:
        """Consumer group of the timer service (owners of the timers partitions)."""
        return f"{self.namespace}.timer-service"


_LEGAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as Chronik needs it.

    ``partitions`` is what creation uses; an existing topic with another count is refused
    only when ``fixed_partitions`` (the topics partitioned by workflow id), since a
    different count there would move workflows away from their owners.
    """

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    fixed_partitions: bool = True

    @property
    def cleanup_policy(self) -> str:
        return self.config["cleanup.policy"]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every topic of one namespace, with the settings ``chronik topics create`` applies.

    Retention choices: the inbox keeps a week (a stopped worker catches up after a long
    weekend); the compacted topics keep tombstones for a day (``delete.retention.ms``) so
    a restoring owner sees every delete; replies are read at once by a waiting client, so
    an hour is plenty; the dead-letter topic keeps four weeks for an operator to look.
    """

    namespace: str = DEFAULT_NAMESPACE
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = DEFAULT_REPLICATION_FACTOR
    #: Partitions of a new task-queue topic; None: the same as the inbox.
    task_partitions: int | None = None

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError("partitions and replication factor must be at least 1")
        TopicNames(self.namespace).tasks("probe")  # validates the namespace characters

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.namespace)

    def _config(self, cleanup: str, **settings: int) -> dict[str, str]:
        config = {"cleanup.policy": cleanup}
        if self.replication_factor >= 3:
            config["min.insync.replicas"] = "2"
        config.update({name.replace("_", "."): str(value) for name, value in settings.items()})
        return config

    def _spec(
        self, name: str, partitions: int, config: dict[str, str], *, fixed: bool = True
    ) -> TopicSpec:
        return TopicSpec(name, partitions, self.replication_factor, config, fixed)

    @property
    def partitioned(self) -> tuple[TopicSpec, ...]:
        """Inbox, history, timers, status: the topics that must share the partition count."""
        n, names = self.partitions, self.names
        compact = self._config("compact", delete_retention_ms=DAY_MS, min_compaction_lag_ms=0)
        return (
            self._spec(names.inbox, n, self._config("delete", retention_ms=7 * DAY_MS)),
            self._spec(names.history, n, compact),
            self._spec(names.timers, n, compact),
            self._spec(names.status, n, compact),
        )

    def topics(self) -> tuple[TopicSpec, ...]:
        """Every topic of the namespace except the on-demand task-queue topics."""
        names = self.names
        return (
            *self.partitioned,
            self._spec(
                names.replies,
                self.partitions,
                self._config("delete", retention_ms=HOUR_MS),
                fixed=False,
            ),
            self._spec(
                names.inbox_dlq,
                self.partitions,
                self._config("delete", retention_ms=28 * DAY_MS),
                fixed=False,
            ),
        )

    def task_queue(self, queue: str) -> TopicSpec:
        """The topic of one activity task queue; any existing partition count is accepted."""
        partitions = self.task_partitions or self.partitions
        config = self._config("delete", retention_ms=7 * DAY_MS)
        return self._spec(self.names.tasks(queue), partitions, config, fixed=False)
