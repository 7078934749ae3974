"""``chronik replay``: production histories against changed code, before the deploy."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from runtime.client import Client, WorkflowHandle
from tests.engine.steps import STEPS
from tests.integration import drift_v1, drift_v2
from tests.integration.conftest import PARTITIONS, Launcher
from topics import serde
from topics.catalogue import TopicNames
from topics.partitioner import partition_for
from workers.worker import Worker

pytestmark = pytest.mark.kafka

V1, V2 = "tests.integration.drift_v1", "tests.integration.drift_v2"


async def _chronik(bootstrap: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workers.cli", "--bootstrap-servers", bootstrap,
               "--namespace", namespace, *args]  # fmt: skip
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120
    )


def _lines(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {line["workflow_id"]: line for line in map(json.loads, result.stdout.splitlines())}


Chronik = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]


@pytest.fixture
def chronik(
    kafka_bootstrap: str, topics_ready: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Chronik:
    """``chronik`` on this test's namespace; an embedded worker's stores in its tmp dir."""
    monkeypatch.setenv("CHRONIK_STATE_DIR", str(tmp_path / "state"))
    return functools.partial(_chronik, kafka_bootstrap, topics_ready)


async def test_open_runs_and_captured_histories_replay_against_old_and_new_code(
    client: Client, chronik: Chronik, tmp_path: Path
) -> None:
    async with Worker(client, task_queue="drift", workflows=drift_v1.WORKFLOWS, activities=STEPS):
        for name in ("r-1", "r-2"):
            handle = await client.start_workflow(drift_v1.Drifting.run, id=name, task_queue="drift")
            await drift_v1.until_first_step_done(handle)
        await handle.signal(drift_v1.Drifting.go)
        assert await handle.result() == "a"  # r-2 closed: --open leaves it out

        same_code = await chronik("replay", V1, "--open")
        assert same_code.returncode == 0, same_code.stderr
        assert {i: line["ok"] for i, line in _lines(same_code).items()} == {"r-1": True}
        assert "replayed 1 workflows: 0 do not replay" in same_code.stderr

        changed = await chronik("replay", V2, "--open", "--type", "Drifting")
        assert changed.returncode == 1
        [line] = _lines(changed).values()
        assert line["workflow_id"] == "r-1" and line["ok"] is False
        assert "step_a" in line["error"] and "step_b" in line["error"]

        both = await chronik("replay", V2, "--workflow-id", "r-1", "--workflow-id", "r-2")
        assert both.returncode == 1
        assert {i: line["ok"] for i, line in _lines(both).items()} == {"r-1": False, "r-2": False}

        captured = await chronik("workflow", "history", "r-2")
        assert captured.returncode == 0, captured.stderr
    path = tmp_path / "r-2.jsonl"
    path.write_text(captured.stdout)
    offline = await chronik("replay", V1, "--history", str(path))  # no Kafka needed for files
    assert offline.returncode == 0, offline.stderr
    assert _lines(offline)["r-2"]["status"] == "completed"
    # A capture begun after the start (a `history tail` without --from-beginning) holds
    # nothing to check the code against: it must not pass for one that replays.
    partial = tmp_path / "r-2-tail.jsonl"
    partial.write_text("".join(captured.stdout.splitlines(keepends=True)[2:]))
    unchecked = await chronik("replay", V1, "--history", str(partial))
    assert unchecked.returncode == 2, unchecked.stdout
    assert "r-2" in unchecked.stderr and "--from-beginning" in unchecked.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    nothing = await chronik("replay", V1, "--history", str(empty))
    assert nothing.returncode == 2 and "holds no history events" in nothing.stderr


async def test_replay_refuses_what_it_cannot_replay_in_one_line(
    chronik: Chronik, tmp_path: Path
) -> None:
    nothing = await chronik("replay", V1)
    assert nothing.returncode == 2 and "nothing to replay" in nothing.stderr
    not_json = tmp_path / "notes.txt"
    not_json.write_text("not a history\n")
    bad_file = await chronik("replay", V1, "--history", str(not_json))
    assert bad_file.returncode == 2 and "is not a Chronik history" in bad_file.stderr
    unknown_type = await chronik("replay", V1, "--open", "--type", "Nope")
    assert unknown_type.returncode == 2 and "define no workflow 'Nope'" in unknown_type.stderr
    unknown_id = await chronik("replay", V1, "--workflow-id", "never-started")
    assert unknown_id.returncode == 2 and "never-started" in unknown_id.stderr
    no_source = await chronik("replay", V1, "--from-topic")
    assert no_source.returncode == 2 and "--from-topic is where --open" in no_source.stderr
    for result in (nothing, bad_file, unknown_type, unknown_id, no_source):
        assert "Traceback" not in result.stderr


async def test_the_open_run_is_replayed_not_the_runs_it_continued_from(
    client: Client, chronik: Chronik, tmp_path: Path
) -> None:
    async with Worker(client, task_queue="drift", workflows=drift_v1.WORKFLOWS, activities=STEPS):
        handle = await client.start_workflow(
            drift_v1.Generations.run, 0, id="gen", task_queue="drift"
        )
        await _until_continued(handle)
        replayed = await chronik("replay", V2, "--open")  # the owner answers with history
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert _lines(replayed)["gen"]["ok"] is True
        every_run = await chronik("replay", V2, "--open", "--all-runs")
        assert every_run.returncode == 1
        assert "step_a" in _lines(every_run)["gen"]["error"]
    # As the replay said: a worker replays the open run only, and drift_v2 runs it on.
    async with Worker(client, task_queue="drift", workflows=drift_v2.WORKFLOWS, activities=STEPS):
        await handle.signal(drift_v2.Generations.go)
        assert await handle.result() == "generation 1"


async def test_from_topic_replays_open_runs_with_every_worker_stopped(
    client: Client, chronik: Chronik, launch: Launcher
) -> None:
    """A full-stop deploy: no owner answers, the histories are read from the topic, and
    the lines are the ones the owners' histories gave."""
    worker = launch.worker(role="all", worker_id="w-1", modules=(V1,), task_queue="drift")
    drifting = await client.start_workflow(drift_v1.Drifting.run, id="d-1", task_queue="drift")
    await drift_v1.until_first_step_done(drifting)
    closed = await client.start_workflow(drift_v1.Drifting.run, id="d-2", task_queue="drift")
    await drift_v1.until_first_step_done(closed)
    await closed.signal(drift_v1.Drifting.go)
    assert await closed.result() == "a"
    generations = await client.start_workflow(
        drift_v1.Generations.run, 0, id="gen", task_queue="drift"
    )
    await _until_continued(generations)
    collected = await client.start_workflow(drift_v1.Drifting.run, id="d-3", task_queue="drift")
    await drift_v1.until_first_step_done(collected)
    from_owners = await chronik("replay", V2, "--open")
    closed_events = len(await closed.fetch_history())
    worker.kill()
    _collect(launch.bootstrap, launch.namespace, "d-3", up_to_event=40)

    from_topic = await chronik("replay", V2, "--open", "--from-topic")
    assert from_topic.returncode == 1, from_topic.stderr
    lines = _lines(from_topic)
    assert lines == {i: line for i, line in _lines(from_owners).items() if i != "d-3"}
    assert lines["gen"]["ok"] is True and lines["d-1"]["ok"] is False
    assert "step_a" in lines["d-1"]["error"] and "step_b" in lines["d-1"]["error"]

    one_closed = await chronik("replay", V1, "--workflow-id", "d-2", "--from-topic")
    assert one_closed.returncode == 0, one_closed.stderr
    line = _lines(one_closed)["d-2"]
    assert line["ok"] is True and line["status"] == "completed"
    assert line["events"] == closed_events
    for gone in ("never-started", "d-3"):  # d-3: every event tombstoned, as retention does
        missing = await chronik("replay", V1, "--workflow-id", gone, "--from-topic")
        assert missing.returncode == 2, missing.stdout
        assert gone in missing.stderr and len(missing.stderr.splitlines()) == 1


async def _until_continued(handle: WorkflowHandle) -> None:
    for _ in range(300):  # until the second run waits for `go`
        if (await handle.describe()).run_id != handle.first_execution_run_id:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never continued as new")


def _collect(bootstrap: str, namespace: str, workflow_id: str, up_to_event: int) -> None:
    """Tombstone the status and every history key ``workflow_id`` can have up to
    ``up_to_event``, as an owner ending its retention does (a key it never had is deleted
    too: harmless)."""
    names = TopicNames(namespace)
    partition = partition_for(workflow_id, PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap})
    for event_id in range(1, up_to_event + 1):
        key = serde.encode_history_key(workflow_id, event_id)
        producer.produce(names.history, key=key, value=None, partition=partition)
    producer.produce(
        names.status, key=serde.workflow_key(workflow_id), value=None, partition=partition
    )
    assert producer.flush(10) == 0
