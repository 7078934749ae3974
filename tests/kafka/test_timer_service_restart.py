"""A restarted timer service fires nothing again that was fired and cleared before.

A store is fresh as of a time it can vouch for (`runtime.store`), and a restart rebuilds
one older than the topic's ``delete.retention.ms`` less a margin (`workers.restore`). The
timer service used to vouch only with its records' timestamps, so an idle one went stale
while it ran; its restart rebuilt from offset 0 and fired again every timer it had fired
whose clear never came.

And a clear did not come for a fire the workflow ignored (its run gone): the partition
owner cleared only the fires its workflow took, so such a timer stayed on the compacted
topic, and every rebuild of a store — a restart after a stale store, a new machine —
fired it once more. The owner clears those too now (`workers.partition`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from structlog.testing import capture_logs

from runtime.engine import WorkflowRegistry
from runtime.messages import DurableTimer, TimerFiredReport
from tests.kafka.topic_config import set_topic_config
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers.membership import Member
from workers.timer_service import TimerService, TimerServiceConfig
from workers.workflow_worker import WorkflowWorker, WorkflowWorkerConfig

#: Tombstones last this long on the test's timers topic: a store stays usable for half.
DELETE_RETENTION_MS = 4_000


def _timer_on_the_topic(config: dict[str, str], names: TopicNames, timer: DurableTimer) -> None:
    """The timer as the owner writes it: in a committed transaction."""
    producer = Producer(
        {**producer_config(config), "transactional.id": f"owner-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    key = serde.encode_timer_key(timer.workflow_id, timer.timer_id)
    producer.produce(names.timers, key=key, value=serde.encode_timer(timer), partition=0)
    producer.commit_transaction(30)


def _records(config: dict[str, str], topic: str) -> list[Message]:
    """Every committed record of ``topic[0]`` so far, tombstones included."""
    consumer = Consumer({**config, "group.id": "unused", "isolation.level": "read_committed"})
    where = TopicPartition(topic, 0)
    _, high = consumer.get_watermark_offsets(where, timeout=10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    records: list[Message] = []
    deadline = time.monotonic() + 30
    while consumer.position([where])[0].offset < high and time.monotonic() < deadline:
        records += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    return records


def _fires(config: dict[str, str], names: TopicNames) -> list[TimerFiredReport]:
    """Every timer fire on the inbox so far."""
    reports = [serde.decode_inbox(m.value() or b"") for m in _records(config, names.inbox)]
    return [report for report in reports if isinstance(report, TimerFiredReport)]


def _timers_now(config: dict[str, str], names: TopicNames) -> dict[tuple[str, str], bytes | None]:
    """The last record of each key on the timers topic (None: a tombstone), as compaction
    will leave them."""
    last: dict[tuple[str, str], bytes | None] = {}
    for message in _records(config, names.timers):
        key = serde.decode_timer_key(message.key() or b"")
        last[(key.workflow_id, key.timer_id)] = message.value()
    return last


def _inbox_taken(config: dict[str, str], names: TopicNames) -> bool:
    """Whether the partition owners committed, with what they wrote, a position past
    every record the inbox holds so far."""
    last = max((m.offset() or 0 for m in _records(config, names.inbox)), default=None)
    consumer = Consumer({**config, "group.id": names.workflow_group})
    [committed] = consumer.committed([TopicPartition(names.inbox, 0)], timeout=10)
    consumer.close()
    return last is not None and committed.offset > last


class _Runner(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def _run_until(runner: _Runner, done: Callable[[], bool], then_s: float) -> None:
    """Run ``runner`` until ``done()``, then ``then_s`` seconds more, then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, "the service did not get there"
            time.sleep(0.2)
        time.sleep(then_s)
    finally:
        stop.set()
        thread.join(30)


def _restored(logs: list[MutableMapping[str, Any]]) -> bool:
    return any(entry["event"] == "partition restored" for entry in logs)


def test_an_idle_timer_service_restarts_from_its_store_and_fires_nothing_again(
    kafka_config: dict[str, str], kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, 1))
    names = TopicNames(namespace)
    set_topic_config(kafka_config, names.timers, delete_retention_ms=str(DELETE_RETENTION_MS))
    # A timer whose clear never comes: no partition owner runs here to take its fire.
    stale = DurableTimer("wf", "run-1", "sleep:1", int(time.time() * 1000))
    _timer_on_the_topic(kafka_config, names, stale)
    member = Member.resolve(kafka_bootstrap, namespace, {}, "timers-1")
    config = TimerServiceConfig(member, tmp_path, fresh_as_of_every_ms=300)

    # Fired; then idle for longer than a store stays usable without word of freshness.
    _run_until(
        TimerService(config),
        lambda: len(_fires(kafka_config, names)) == 1,
        then_s=DELETE_RETENTION_MS / 1000,
    )
    with capture_logs() as logs:
        _run_until(TimerService(config), lambda: _restored(logs), then_s=2.0)

    assert [entry["rebuilt"] for entry in logs if entry["event"] == "partition restored"] == [None]
    assert [(f.workflow_id, f.timer_id) for f in _fires(kafka_config, names)] == [("wf", "sleep:1")]


def test_a_fire_its_workflow_ignores_is_cleared_and_a_rebuilt_store_does_not_fire_it(
    kafka_config: dict[str, str], kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    TopicAdmin(kafka_config).create(Catalogue(namespace, 1))
    names = TopicNames(namespace)
    # A timer of a run the owner knows nothing of (its history collected, say).
    gone = DurableTimer("wf", "run-1", "sleep:1", int(time.time() * 1000))
    _timer_on_the_topic(kafka_config, names, gone)
    timers = Member.resolve(kafka_bootstrap, namespace, {}, "timers-1")
    _run_until(
        TimerService(TimerServiceConfig(timers, tmp_path / "timers")),
        lambda: len(_fires(kafka_config, names)) == 1,
        then_s=0,
    )

    owner = Member.resolve(kafka_bootstrap, namespace, {}, "owner-1")
    config = WorkflowWorkerConfig(owner, tmp_path / "owner", fire_timers=False)
    _run_until(
        WorkflowWorker(config, WorkflowRegistry([])),
        lambda: _inbox_taken(kafka_config, names),
        then_s=0,
    )
    assert _timers_now(kafka_config, names) == {("wf", "sleep:1"): None}

    with capture_logs() as logs:  # a store rebuilt from offset 0 (a new machine, say)
        _run_until(
            TimerService(TimerServiceConfig(timers, tmp_path / "new")),
            lambda: _restored(logs),
            then_s=2.0,
        )
    assert [(f.workflow_id, f.timer_id) for f in _fires(kafka_config, names)] == [("wf", "sleep:1")]
