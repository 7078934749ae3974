"""A timer service that was idle restarts from its stores instead of rebuilding them.

A store is fresh as of a time it can vouch for (`runtime.store`), and a restart rebuilds
one older than the topic's ``delete.retention.ms`` less a margin (`workers.restore`). The
timer service used to vouch only with its records' timestamps, so an idle one went stale
while it ran; its restart rebuilt from offset 0 and fired again every timer it had fired
whose clear never came (a fire the workflow ignores clears nothing).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from structlog.testing import capture_logs

from runtime.messages import DurableTimer, TimerFiredReport
from tests.kafka.topic_config import set_topic_config
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers.membership import Member
from workers.timer_service import TimerService, TimerServiceConfig

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


def _fires(config: dict[str, str], names: TopicNames) -> list[TimerFiredReport]:
    """Every timer fire on the inbox so far."""
    consumer = Consumer({**config, "group.id": "unused", "isolation.level": "read_committed"})
    where = TopicPartition(names.inbox, 0)
    _, high = consumer.get_watermark_offsets(where, timeout=10)
    consumer.assign([TopicPartition(names.inbox, 0, 0)])
    fires: list[TimerFiredReport] = []
    deadline = time.monotonic() + 30
    while consumer.position([where])[0].offset < high and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.5):
            if message.error() is None and message.value() is not None:
                report = serde.decode_inbox(message.value() or b"")
                if isinstance(report, TimerFiredReport):
                    fires.append(report)
    consumer.close()
    return fires


def _run_until(service: TimerService, done: Callable[[], bool], then_s: float) -> None:
    """Run ``service`` until ``done()``, then ``then_s`` seconds more, then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, "the timer service did not get there"
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
    # A timer of a run that is gone: its owner takes no fire, and clears nothing.
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
