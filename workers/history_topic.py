"""Workflow histories read straight from the compacted ``<ns>.history`` topic, no worker asked.

``chronik replay --from-topic`` is the guard of a full-stop deploy: every workflow worker
is down, so no owner answers ``fetch_history``, yet the histories are all in Kafka. The
topic holds one record per ``{workflow_id, event_id}`` key; reading it from its start to
its end as of now, the last record of each key winning (compaction may not have run yet)
and a tombstone deleting the event (retention collected the history), gives the events
the owner's store would hold — the store is rebuilt from exactly this.

The cost is whole partitions: a workflow's events are spread along its partition among
every other workflow's of that partition, so each partition a wanted id hashes to is read
to its end. Only those partitions are read, only the keys of their records are decoded
(many at once), and only the surviving events of wanted ids are decoded as events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message

from runtime.errors import RPCError, WorkflowNotFoundError
from runtime.events import HistoryEvent
from topics import serde
from topics.catalogue import TopicNames
from topics.errors import DecodeError
from topics.partitioner import partition_for
from topics.scan import partition_count, read_to_end

#: (workflow id, event id) -> (partition, offset, value) of the event's latest record.
Latest = dict[tuple[str, int], tuple[int, int, bytes]]


def read_histories(
    kafka_config: dict[str, Any],
    names: TopicNames,
    workflow_ids: Sequence[str],
    *,
    timeout_s: float = 60.0,
) -> list[list[HistoryEvent]]:
    """The history of each of ``workflow_ids``, in their order, its events in event-id order.

    Reads ``read_committed``, joining no group: only events of committed steps, the ones
    an owner replays, and nothing a running worker would notice. An id with no event on
    the topic raises `WorkflowNotFoundError` naming every such id: a typo or a history
    collected must not pass for a workflow that replays.
    """
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"{names.namespace}.history-replay",  # required, never joined
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        latest = _read_latest(consumer, names, set(workflow_ids), timeout_s)
        return _histories(latest, workflow_ids, names.history)
    except (KafkaException, DecodeError) as error:  # a foreign record: one line, not a trace
        raise RPCError(f"reading {names.history} failed: {error}") from error
    finally:
        consumer.close()


def _read_latest(
    consumer: Consumer, names: TopicNames, wanted: set[str], timeout_s: float
) -> Latest:
    """The latest record of every event key of ``wanted`` ids that no tombstone deleted."""
    topic = names.history
    count = partition_count(consumer, topic, names.namespace)
    latest: Latest = {}

    def apply(records: list[Message]) -> None:
        keys = serde.read_history_keys(
            [m.key() or b"" for m in records],
            [(topic, m.partition(), m.offset()) for m in records],
        )
        for message, key in zip(records, keys, strict=True):
            if key[0] in wanted:
                _keep(latest, key, message)

    read_to_end(consumer, topic, (partition_for(i, count) for i in wanted), apply, timeout_s)
    return latest


def _keep(latest: Latest, key: tuple[str, int], message: Message) -> None:
    value = message.value()
    if value is None:  # a tombstone: the event is deleted
        latest.pop(key, None)
    else:
        latest[key] = (message.partition() or 0, message.offset() or 0, value)


def _histories(latest: Latest, workflow_ids: Iterable[str], topic: str) -> list[list[HistoryEvent]]:
    by_id: dict[str, list[HistoryEvent]] = {}
    for (workflow_id, _), (partition, offset, value) in sorted(latest.items()):
        event = serde.decode_history_event(value, topic=topic, partition=partition, offset=offset)
        by_id.setdefault(workflow_id, []).append(event)
    missing = [i for i in workflow_ids if i not in by_id]
    if missing:
        raise WorkflowNotFoundError(
            f"no history on {topic} for {', '.join(map(repr, missing))} "
            "(never started in this namespace, or its retention ended)"
        )
    return [by_id[i] for i in workflow_ids]
