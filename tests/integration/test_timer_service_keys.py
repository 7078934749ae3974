"""The standalone timer service never erases a newer timer that reuses a fired one's key.

Timer keys repeat across runs (each run's first sleep is ``sleep:1``). The service used to
tombstone what it fired; when a continued-as-new run set the same key after the service's
last fetch, that tombstone landed after the new timer and deleted it. The owner clears
fired timers now (`workers.partition`), so here nothing but the new timer follows.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runtime.messages import DurableTimer
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from workers.membership import Member
from workers.timer_service import TimerService, TimerServiceConfig

pytestmark = pytest.mark.kafka


def _start(service: TimerService, names: TopicNames) -> None:
    # what TimerService.run does before its loop
    service._producer.init_transactions(60)
    service._consumer.subscribe(
        [names.timers],
        on_assign=service._on_assign,
        on_revoke=lambda _c, tps: service._release([tp.partition for tp in tps], "revoked"),
    )


def _last_per_key(bootstrap: str, topic: str) -> dict[object, bytes | None]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "dump",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    live: dict[object, bytes | None] = {}
    while (m := consumer.poll(3)) is not None:
        if m.error() is None:
            live[serde.decode_timer_key(m.key() or b"")] = m.value()
    consumer.close()
    return live


def test_a_newer_timer_on_a_fired_timers_key_survives(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 1))
    names = TopicNames(namespace)
    member = Member.resolve(kafka_bootstrap, namespace, {}, "review-ts")
    service = TimerService(TimerServiceConfig(member, tmp_path / "a"))
    _start(service, names)
    writer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    key = serde.encode_timer_key("wf", "sleep:1")

    # run 1 sleeps 1.5 s (what the workflow worker writes for `workflow.sleep`)
    old = DurableTimer("wf", "run-1", "sleep:1", int(time.time() * 1000) + 1500)
    writer.produce(names.timers, key=key, value=serde.encode_timer(old), partition=0)
    writer.flush()
    deadline = time.time() + 30
    while not any(s.next_fire_at() for s in service._stores.values()):
        assert time.time() < deadline
        service._step()

    # Run 1 continues as new just before its sleep is due; run 2 sleeps a day under the
    # same key {wf, sleep:1}. The service has not fetched that record yet when run 1's
    # timer comes due (fetch round trip / its own fire transaction in flight).
    new = DurableTimer("wf", "run-2", "sleep:1", int(time.time() * 1000) + 86_400_000)
    writer.produce(names.timers, key=key, value=serde.encode_timer(new), partition=0)
    writer.flush()
    time.sleep(max(0.0, old.fire_at_ms / 1000 - time.time()) + 0.05)
    service._fire_due(consumed=False)  # fires run 1's timer (it used to tombstone the key)

    for _ in range(20):  # the service catches up: run 2's timer, then its own tombstone
        service._step()
    pending = sum(s.pending_timer_count() for s in service._stores.values())
    topic_state = _last_per_key(kafka_bootstrap, names.timers)
    service._consumer.close()
    assert pending == 1, "run 2's timer is gone from the service's index"
    assert topic_state[serde.decode_timer_key(key)] is not None, (
        "run 2's timer is gone from the compacted timers topic"
    )
