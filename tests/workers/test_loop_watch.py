"""`workers.loop_watch`: a blocked event loop is named, with the line that blocks it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from confluent_kafka import Producer
from structlog.testing import capture_logs

from runtime import activity
from runtime.engine import ActivityRegistry
from runtime.messages import ActivityTask
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.transient import produce_when_room
from workers.activity_worker import ActivityWorker, ActivityWorkerConfig
from workers.loop_watch import LoopWatch
from workers.membership import Member


def _blocks_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)


def _warnings(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["log_level"] == "warning"]


async def test_a_stall_is_warned_once_with_its_stack_and_its_end_is_logged() -> None:
    watch = LoopWatch(
        asyncio.get_running_loop(), threshold_s=0.5, running=lambda: ["charge"], what="test"
    )
    with capture_logs() as logs:
        watch.start()
        try:
            await asyncio.sleep(1.0)  # a loop that runs: nothing to say
            assert logs == []
            _blocks_the_loop_for(1.5)
            await asyncio.sleep(0.5)
        finally:
            watch.stop()
    [warning] = _warnings(logs)
    assert "an async activity runs blocking code" in warning["event"]
    assert warning["cause"] == "blocking code"
    assert warning["running"] == ["charge"]
    assert "_blocks_the_loop_for" in warning["stack"] and "time.sleep" in warning["stack"]
    assert warning["blocked_s"] >= 0.5
    [recovered] = [entry for entry in logs if entry["log_level"] == "info"]
    assert recovered["blocked_s"] >= 1.2


async def test_a_loop_waiting_for_room_in_the_producer_queue_is_not_blamed_on_activities(
    kafka_bootstrap: str, namespace: str
) -> None:
    """``produce_when_room`` holds the loop while librdkafka's queue is full (a slow or
    unreachable broker): the warning told the operator to fix an async activity, which
    was not the cause. Here the queue holds one record, lingering 2 s before it is sent."""
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace))
    inbox = TopicNames(namespace).inbox
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "queue.buffering.max.messages": 1,
            "linger.ms": 2_000,
        }
    )
    producer.produce(inbox, key=b"wf", value=b"first")  # the queue is full
    watch = LoopWatch(
        asyncio.get_running_loop(), threshold_s=0.5, running=lambda: ["charge"], what="test"
    )
    with capture_logs() as logs:
        watch.start()
        try:
            produce_when_room(producer, inbox, key=b"wf", value=b"second")
            await asyncio.sleep(0.5)
        finally:
            watch.stop()
    assert producer.flush(10) == 0
    [warning] = _warnings(logs)
    assert "producer's queue is full" in warning["event"]
    assert "queue.buffering.max.messages" in warning["event"]
    assert "activity" not in warning["event"]
    assert warning["cause"] == "producer queue full"
    assert "produce_when_room" in warning["stack"]


def test_a_threshold_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold_s"):
        LoopWatch(asyncio.new_event_loop(), threshold_s=0, running=list, what="test")


@activity.defn
async def sleeps_in_async_def() -> str:
    time.sleep(1.5)  # noqa: ASYNC251 - the mistake the watch exists for
    return "done"


@pytest.mark.kafka
async def test_the_activity_worker_names_an_async_activity_that_blocks_its_loop(
    kafka_bootstrap: str, namespace: str
) -> None:
    names = TopicNames(namespace)
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).ensure_task_queue(Catalogue(namespace), "q")
    task = ActivityTask("wf", "run", "T", 1, 1, "sleeps_in_async_def", "q", (), 0, 60_000, 0)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(names.tasks("q"), key=b"wf/1", value=serde.encode_task(task))
    assert producer.flush(10) == 0
    registry = ActivityRegistry([sleeps_in_async_def])
    config = ActivityWorkerConfig(
        Member(kafka_bootstrap, namespace, "blocked-1"), "q", blocked_loop_warning_s=0.5
    )
    worker = ActivityWorker(config, registry, registry.converter)
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(worker.run(stop))
        for _ in range(600):
            if _warnings(logs):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await running
    blocked = [w for w in _warnings(logs) if "event loop is blocked" in w["event"]]
    assert blocked, [entry["event"] for entry in logs]
    assert blocked[0]["running"] == ["sleeps_in_async_def"]
    assert "sleeps_in_async_def" in blocked[0]["stack"]
