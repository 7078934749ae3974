"""Crashes, scale-out, lost state and long timers, with real worker processes (issue 4).

Every kill here is ``kill -9`` of one PID this test started: no shutdown code runs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.client import Client, WorkflowHandle
from runtime.events import HistoryEvent, WorkflowCompleted
from runtime.messages import WorkflowStatus
from runtime.store import PartitionStore
from tests.integration.conftest import Launcher
from tests.integration.kafka_reading import read_history, read_topic
from tests.integration.ledger_workflows import ledger_order, sleeper
from tests.integration.processes import ChronikProcess
from topics import serde
from topics.catalogue import TopicNames

pytestmark = pytest.mark.kafka

STEPS = 4


def _ledger(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


async def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _assert_exactly_once(history: list[HistoryEvent], workflow_ids: set[str]) -> None:
    """One completion per workflow, and no event id written twice."""
    completions = Counter(
        e.workflow_id for e in history if isinstance(e.attributes, WorkflowCompleted)
    )
    assert {w for w in workflow_ids if completions[w] != 1} == set()
    ids = Counter((e.workflow_id, e.event_id) for e in history if e.workflow_id in workflow_ids)
    assert [key for key, count in ids.items() if count > 1] == []
    for workflow_id in workflow_ids:
        event_ids = sorted(e for w, e in ids if w == workflow_id)
        assert event_ids == list(range(1, len(event_ids) + 1)), workflow_id


async def _results(handles: list[WorkflowHandle], timeout_s: float) -> list[object]:
    return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout_s)


async def test_kill_9_of_workflow_then_activity_worker_loses_and_duplicates_nothing(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    launch: Launcher,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    env = {"CHRONIK_TEST_LEDGER": str(ledger)}

    def spawn(role: str, worker_id: str) -> ChronikProcess:
        return launch.worker(role=role, worker_id=worker_id, env=env)

    workflow_worker = spawn("workflow", "wf-1")
    activity_worker = spawn("activity", "act-1")
    count = 500
    handles = await asyncio.gather(
        *(
            client.start_workflow(ledger_order, f"o-{i}", id=f"o-{i}", task_queue="orders")
            for i in range(count)
        )
    )
    await _wait_for(lambda: len(_ledger(ledger)) >= 300, 120, "first executions")
    workflow_worker.kill()
    at_workflow_kill = len(_ledger(ledger))
    spawn("workflow", "wf-2")
    await _wait_for(lambda: len(_ledger(ledger)) >= at_workflow_kill + 400, 120, "progress")
    activity_worker.kill()
    first_activity_pid = activity_worker.pid
    second_activity_pid = spawn("activity", "act-2").pid

    results = await _results(list(handles), 300)

    assert results == [[f"o-{i}:{s}" for s in range(STEPS)] for i in range(count)]
    _assert_exactly_once(
        read_history(kafka_bootstrap, topics_ready), {f"o-{i}" for i in range(count)}
    )
    runs: dict[str, list[int]] = defaultdict(list)  # idempotency key -> executing PIDs
    for line in _ledger(ledger):
        key, pid = line.split()
        runs[key].append(int(pid))
    # idempotency key = workflow id / run id / seq / attempt: one attempt per step sufficed
    steps = Counter(key.split("/")[0] for key in runs)
    assert steps == Counter({f"o-{i}": STEPS for i in range(count)})
    assert all(key.endswith("/1") for key in runs)
    repeated = {key: pids for key, pids in runs.items() if len(pids) > 1}
    print(
        f"\nactivity executions: {sum(map(len, runs.values()))} for {count * STEPS} steps; "
        f"{len(repeated)} tasks ran twice"
    )
    # A task runs again only when it was in flight in the killed activity worker: first
    # there, then once in its successor. Never twice in one process, never three times.
    assert all(pids == [first_activity_pid, second_activity_pid] for pids in repeated.values())


async def test_three_workflow_workers_share_partitions_and_survive_losing_one(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    launch: Launcher,
    tmp_path: Path,
) -> None:
    env = {"CHRONIK_TEST_LEDGER": str(tmp_path / "ledger")}
    workers = [
        launch.worker(
            role="workflow",
            worker_id=f"wf-{n}",
            env=env,
        )
        for n in range(3)
    ]
    launch.worker(
        role="activity",
        worker_id="act",
        env=env,
    )
    count = 200
    handles = await asyncio.gather(
        *(
            client.start_workflow(ledger_order, f"s-{i}", id=f"s-{i}", task_queue="orders")
            for i in range(count)
        )
    )
    await _wait_for(lambda: len(_ledger(tmp_path / "ledger")) >= 200, 120, "progress")
    workers[0].kill()
    results = await _results(list(handles), 300)
    assert len(results) == count
    _assert_exactly_once(
        read_history(kafka_bootstrap, topics_ready), {f"s-{i}" for i in range(count)}
    )
    assert all(w.alive() for w in workers[1:])


async def test_deleted_state_directory_is_rebuilt_from_the_history_topic(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    launch: Launcher,
    tmp_path: Path,
) -> None:
    env = {"CHRONIK_TEST_LEDGER": str(tmp_path / "ledger")}
    worker = launch.worker(
        role="all",
        worker_id="keeper",
        env=env,
    )
    done = await client.execute_workflow(ledger_order, "before", id="before", task_queue="orders")
    waiting = await client.start_workflow(sleeper, 3600.0, id="long-sleeper", task_queue="orders")
    assert (await waiting.describe()).status == WorkflowStatus.RUNNING
    worker.stop()
    state = tmp_path / "state" / "keeper"
    assert any(state.rglob("CURRENT")), "the worker kept a RocksDB store"
    shutil.rmtree(state)

    launch.worker(
        role="all",
        worker_id="keeper",
        env=env,
    )
    old = client.get_workflow_handle("before")
    assert await old.result() == done  # answered from the rebuilt store
    assert (await waiting.describe()).status == WorkflowStatus.RUNNING
    await waiting.terminate("test over")
    after = await client.execute_workflow(ledger_order, "after", id="after", task_queue="orders")
    assert after == [f"after:{s}" for s in range(STEPS)]


async def test_short_and_30_day_timers_survive_restarts_of_the_worker(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    launch: Launcher,
    tmp_path: Path,
) -> None:

    def spawn(worker_id: str) -> ChronikProcess:
        return launch.worker(role="all", worker_id=worker_id)

    first = spawn("timers-1")
    month = await client.start_workflow(sleeper, 30 * 86400.0, id="month", task_queue="orders")
    short = await client.start_workflow(sleeper, 2.0, id="short", task_queue="orders")
    assert (await month.describe()).status == WorkflowStatus.RUNNING
    first.kill()  # both timers are now only in Kafka (and a dead worker's store)
    second = spawn("timers-2")  # another id: a fresh store, rebuilt from the topics
    assert await asyncio.wait_for(short.result(), 60) == "slept 2.0"
    second.kill()
    third = spawn("timers-2")  # the same id again: its own store, caught up from checkpoints
    assert (await month.describe()).status == WorkflowStatus.RUNNING
    third.stop()

    live: dict[object, bytes | None] = {}
    for record in read_topic(kafka_bootstrap, TopicNames(topics_ready).timers):
        live[serde.decode_timer_key(record.key())] = record.value()  # last one per key wins
    timers = [serde.decode_timer(value) for value in live.values() if value is not None]
    assert [t.workflow_id for t in timers] == ["month"]  # the 2-second one was tombstoned
    stores = [
        PartitionStore(path.parent) for path in (tmp_path / "state" / "timers-2").rglob("CURRENT")
    ]
    try:
        fire_times = [at for store in stores if (at := store.next_fire_at()) is not None]
    finally:
        for store in stores:
            store.close()
    month_fire_at = next(t.fire_at_ms for t in timers if t.workflow_id == "month")
    assert month_fire_at in fire_times
    assert month_fire_at - time.time() * 1000 > 29 * 86400 * 1000


async def test_standalone_timer_service_fires_timers_and_survives_kill_9(
    client: Client,
    kafka_bootstrap: str,
    topics_ready: str,
    launch: Launcher,
    tmp_path: Path,
) -> None:
    launch.worker(
        role="all",
        worker_id="no-timers",
        extra_args=("--no-timers",),
    )
    service = launch.timer_service("timer-service-1")
    first = await client.start_workflow(sleeper, 1.0, id="first", task_queue="orders")
    assert await asyncio.wait_for(first.result(), 60) == "slept 1.0"

    second = await client.start_workflow(sleeper, 3.0, id="second", task_queue="orders")
    service.kill()
    await asyncio.sleep(4)  # the timer is due while no timer service runs
    assert (await second.describe()).status == WorkflowStatus.RUNNING
    launch.timer_service("timer-service-2")
    assert await asyncio.wait_for(second.result(), 60) == "slept 3.0"


@pytest.mark.parametrize("role", ["workflow", "activity", "timers"])
async def test_a_worker_fenced_by_a_second_process_with_its_id_exits_saying_so(
    launch: Launcher, tmp_path: Path, role: str
) -> None:
    """Two processes started with one --worker-id: the broker fences the first static
    member. Its consumer's fatal error came as a record whose `fatal()` is False, so the
    first process stayed up for ever, logging "consume error" and owning nothing; it must
    exit (code 1) with one line naming the cause, for a supervisor to see."""
    if role == "timers":
        first = launch.timer_service("twin")
        args: tuple[str, ...] = ("timers",)
    else:
        first = launch.worker(role=role, worker_id="twin", modules=("examples.order",))
        args = ("worker", "examples.order", "-q", "orders", "--role", role)
    log = tmp_path / "twin.log"
    # Every kind logs its assignments (the activity worker logged none: an operator could
    # not tell which task partitions it held).
    await _wait_for(lambda: "partitions assigned" in log.read_text(), 60, "the first worker")
    started = {"workflow": '"workflow_types": ["one_activity", "process_order"]',
               "activity": '"activity_types": ["noop", "reserve_inventory", "send_confirmation", '
                           '"ship_order", "verify_payment"]',
               "timers": f'"namespace": "{launch.namespace}"'}  # fmt: skip
    assert started[role] in log.read_text()  # what a worker runs, for comparing replicas
    second = ChronikProcess(
        launch.bootstrap,
        launch.namespace,
        (*args, "--worker-id", "twin", "--state-dir", str(tmp_path / "state-2")),
        tmp_path / "twin-2.log",
    ).start()
    launch.started.append(second)
    await _wait_for(lambda: not first.alive(), 60, "the fenced worker to exit")
    assert first.process is not None and first.process.returncode == 1
    text = log.read_text()
    assert "Error: worker 'twin' was fenced: " in text
    assert "(is another process running with the same --worker-id?)" in text
    assert "Traceback" not in text
    assert second.alive()
