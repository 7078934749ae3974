"""The Kafka benchmark of issue 4: Chronik end to end against a real broker.

    .venv/bin/python -m bench.kafka_bench [--bootstrap-servers HOST:PORT] [--workflows N]
        [--in-flight 200] [--scenarios w1,w2,timer,restore,baseline] [--modes inproc,procs]
        [--profile DIR]

Without ``--bootstrap-servers`` it provisions its own broker (`workers.local_kafka`) on free
ports of 127.0.0.1 in a temporary directory and stops it, by its PID, at the end.

Each worker mode gets a fresh namespace (topics with ``--partitions`` partitions):

- ``inproc``: one `workers.Worker` in this process (workflow worker thread + activity
  worker on the event loop), sharing the process — and the GIL — with the driver.
- ``procs``: ``chronik worker ... --role workflow`` and ``... --role activity`` as two
  processes, the way a deployment runs them; the driver is this process.

Scenarios, in this order per mode:

- ``w1``: `examples.order.one_activity` (one no-op activity). Latency at low load: 100
  workflows one at a time, start-to-result (``execute_workflow``) p50/p99. Throughput: N
  workflows with ``--in-flight`` of them started-and-awaited at once; completed/s.
- ``w2``: the same throughput with `examples.order.process_order` (four activities).
- ``timer``: 5 `bench.kafka_workflows.sleep_two_seconds` at once; how late each completes
  after its 2 s (end to end at the client, and timer-started to timer-fired in the history).
- ``restore``: after the workers stopped, every partition's RocksDB rebuilt from
  ``history`` into fresh stores with `workers.restore.restore_partitions`; events/s.
- ``baseline`` (once): the raw Kafka limit (`run_baseline`), moving as many records
  as W1 wrote; Chronik's W1 is printed as a share of it.

Before measuring, each mode warms up with W1 until the broker's JIT has settled (own
broker only: its compiler threads are read from /proc). During W1 and W2 it prints the
CPU per workflow of each process (`bench.cpu`). The figures are printed; nothing is
asserted about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.cpu import CpuAccount, jit_cpu_seconds
from examples import order
from runtime.client import Client
from runtime.events import TimerFired, TimerStarted
from runtime.logging import configure_logging
from runtime.store import PartitionStore
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config
from workers import local_kafka
from workers.cli_worker import GC_THRESHOLDS, load_definitions
from workers.restore import restore_partitions
from workers.worker import Worker

REPO = Path(__file__).resolve().parent.parent
TASK_QUEUE = "bench"
MODULES = ("examples.order", "bench.kafka_workflows")
#: `bench.kafka_workflows.sleep_two_seconds`, by name: bench modules do not import each other
#: (``mypy bench`` checks them as top-level modules).
TIMER_WORKFLOW = "sleep_two_seconds"
TIMER_SECONDS = 2.0
LATENCY_SAMPLES = 100
#: Warm-up rounds (W1 workflows) after ``--warmup``, until the broker's JIT has settled:
#: its compiler threads under 5 % of a core in each of 5 rounds in a row.
WARMUP_ROUND = 1000
JIT_SETTLED = 0.05
SETTLED_ROUNDS = 5
TIMER_PROBES = 5

TARGETS = {
    "w1": ">= 1,000 workflows/s",
    "w2": ">= 300 workflows/s",
    "p50": "<= 30 ms",
    "p99": "<= 100 ms",
    "restore": ">= 50,000 events/s",
}


@dataclass
class ModeResult:
    mode: str
    namespace: str
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def say(line: str) -> None:
    print(line, flush=True)


# --- broker ---------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


#: The PID of the broker this bench started (None: an external one), for CPU accounting.
BROKER_PID: dict[str, int] = {}


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path, broker_pid: int | None) -> Iterator[str]:
    """``bootstrap`` if given (its CPU counted when ``broker_pid`` is), else a broker of
    our own, stopped by its PID at the end."""
    if bootstrap:
        if broker_pid is not None:
            BROKER_PID["broker"] = broker_pid
        yield bootstrap
        return
    port, controller_port = _free_ports(2)
    config = local_kafka.BrokerConfig(
        port=port,
        controller_port=controller_port,
        data_dir=workdir / "kafka",
        cleaner_backoff_ms=15_000,  # Kafka's default, not the tests' one second
    )
    began = time.monotonic()
    status = local_kafka.start(config)
    if status.pid is not None:
        BROKER_PID["broker"] = status.pid
    say(f"broker started at {config.bootstrap} in {time.monotonic() - began:.1f} s")
    try:
        yield config.bootstrap
    finally:
        local_kafka.stop(config)
        say("broker stopped")


# --- workers --------------------------------------------------------------------------


class WorkerProcesses:
    """``chronik worker --role workflow`` and ``--role activity``, stopped by their PIDs."""

    def __init__(
        self, bootstrap: str, namespace: str, workdir: Path, workflow_processes: int = 1
    ) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        names = [f"workflow-{n}" for n in range(workflow_processes)] + ["activity"]
        for name in names:
            role = name.split("-")[0]
            command = [
                sys.executable,
                "-m",
                "workers.cli",
                "--bootstrap-servers",
                bootstrap,
                "--namespace",
                namespace,
                "worker",
                *MODULES,
                "--task-queue",
                TASK_QUEUE,
                "--role",
                role,
                "--worker-id",
                f"bench-{name}",
                "--state-dir",
                str(workdir / "state"),
            ]
            env = {**os.environ, "CHRONIK_LOG_FORMAT": "json", "CHRONIK_LOG_LEVEL": "WARNING"}
            with (workdir / f"{name}.log").open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    command, stdout=log, stderr=log, env=env, cwd=REPO
                )

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


class Profiler:
    """py-spy on the worker processes while a scenario runs (``--profile DIR``)."""

    def __init__(self, directory: Path | None, pids: dict[str, int], label: str) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if directory is None or not Path(executable).exists():
            return
        directory.mkdir(parents=True, exist_ok=True)
        for role, pid in pids.items():
            command = [
                executable,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--threads",
                "--output",
                str(directory / f"{label}-{role}.txt"),
            ]
            log = (directory / f"{label}-{role}.py-spy.log").open("ab")
            self.running.append(subprocess.Popen(command, stdout=log, stderr=log))

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# --- the raw Kafka baseline ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BaselineResult:
    records: int
    value_bytes: int
    partitions: int
    transactions: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def _create_topics(admin: AdminClient, names: list[str], partitions: int) -> None:
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for future in futures.values():
        future.result(30)


def _preload(base: dict[str, Any], topic: str, records: int, value: bytes) -> None:
    producer = Producer({**producer_config(base), "linger.ms": 20})
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=f"wf-{i}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("baseline preload: records not delivered")


def run_baseline(
    bootstrap: str, records: int, *, value_bytes: int = 200, partitions: int = 12
) -> BaselineResult:
    """Move ``records`` records through the transactional loop; delete nothing (temp topics)."""
    base: dict[str, Any] = {"bootstrap.servers": bootstrap}
    prefix = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    source, sink = f"{prefix}.in", f"{prefix}.out"
    admin = AdminClient(base)
    _create_topics(admin, [source, sink], partitions)
    _preload(base, source, records, os.urandom(value_bytes))

    consumer = Consumer(
        {
            **base,
            "group.id": f"{prefix}.group",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
        }
    )
    producer = Producer(
        {
            **producer_config(base),
            "transactional.id": f"{prefix}.txn",
            "linger.ms": 2,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    producer.init_transactions(60)
    consumer.subscribe([source])
    moved, transactions = 0, 0
    started: float | None = None
    deadline = time.monotonic() + 600
    try:
        while moved < records:
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline: only {moved} of {records} records in 600 s")
            batch = consumer.consume(1000, timeout=0.1)
            batch = [m for m in batch if m.error() is None]
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            producer.begin_transaction()
            for message in batch:
                while True:
                    try:
                        producer.produce(sink, key=message.key(), value=message.value())
                        break
                    except BufferError:
                        producer.poll(0.05)
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
            producer.commit_transaction()
            moved += len(batch)
            transactions += 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
    except KafkaException as error:
        raise RuntimeError(f"baseline failed: {error}") from error
    finally:
        consumer.close()
        admin.delete_topics([source, sink])
    return BaselineResult(moved, value_bytes, partitions, transactions, elapsed)


# --- measurements ---------------------------------------------------------------------


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


async def _wait_ready(client: Client, timeout: float = 90.0) -> float:
    """Run W1 workflows until one completes: the workers own their partitions."""
    began = time.perf_counter()
    deadline = began + timeout
    while True:
        try:
            await asyncio.wait_for(
                client.execute_workflow(
                    order.one_activity, id=f"ready-{uuid.uuid4().hex[:8]}", task_queue=TASK_QUEUE
                ),
                timeout=max(1.0, deadline - time.perf_counter()),
            )
            return time.perf_counter() - began
        except TimeoutError:
            raise RuntimeError(f"workers not ready within {timeout} s") from None


async def latency(client: Client, samples: int) -> list[float]:
    """Start-to-result of ``samples`` W1 workflows, one at a time, in ms."""
    observed = []
    for i in range(samples):
        began = time.perf_counter()
        await client.execute_workflow(
            order.one_activity, id=f"lat-{i}-{uuid.uuid4().hex[:6]}", task_queue=TASK_QUEUE
        )
        observed.append((time.perf_counter() - began) * 1000)
    return observed


async def throughput(
    client: Client, run_one: Callable[[str], Awaitable[Any]], count: int, in_flight: int
) -> tuple[float, list[float]]:
    """Seconds to complete ``count`` workflows with ``in_flight`` at once; latencies (ms)."""
    gate = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    tag = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        async with gate:
            began = time.perf_counter()
            await run_one(f"tp-{tag}-{i}")
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - began, latencies


async def timer_lateness(client: Client) -> tuple[list[float], list[float]]:
    """(client-side lateness, history lateness) in ms of ``TIMER_PROBES`` 2 s timers."""
    ids = [f"timer-{uuid.uuid4().hex[:8]}" for _ in range(TIMER_PROBES)]

    async def one(workflow_id: str) -> float:
        began = time.perf_counter()
        await client.execute_workflow(TIMER_WORKFLOW, id=workflow_id, task_queue=TASK_QUEUE)
        return (time.perf_counter() - began - TIMER_SECONDS) * 1000

    end_to_end = list(await asyncio.gather(*(one(i) for i in ids)))
    in_history = []
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        fire_at = next(
            e.attributes.fire_at_ms for e in history if isinstance(e.attributes, TimerStarted)
        )
        fired = next(e.timestamp_ms for e in history if isinstance(e.attributes, TimerFired))
        in_history.append(float(fired - fire_at))
    return end_to_end, in_history


def namespace_partitions(bootstrap: str, namespace: str) -> list[TopicPartition]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{namespace}.bench"})
    try:
        metadata = consumer.list_topics(timeout=10)
        return [
            TopicPartition(name, p)
            for name, topic in metadata.topics.items()
            if name.startswith(f"{namespace}.")
            for p in topic.partitions
        ]
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench.watermarks"})
    try:
        return {
            (tp.topic, tp.partition): int(
                consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            )
            for tp in partitions
        }
    finally:
        consumer.close()


def count_records(
    bootstrap: str, before: dict[tuple[str, int], int], after: dict[tuple[str, int], int]
) -> tuple[dict[str, int], int]:
    """Committed data records (no transaction markers) written between two watermark sets."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench.count",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    ranges = {k: (before.get(k, 0), end) for k, end in after.items() if end > before.get(k, 0)}
    counts: dict[str, int] = {}
    total_bytes = 0
    try:
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in ranges.items()])
        pending = set(ranges)
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.2):
                if message.error() is not None:
                    continue
                key = (str(message.topic()), int(message.partition() or 0))
                if int(message.offset() or 0) >= ranges[key][1]:
                    continue
                counts[key[0]] = counts.get(key[0], 0) + 1
                total_bytes += len(message.value() or b"") + len(message.key() or b"")
            positions = consumer.position([TopicPartition(t, p) for t, p in pending])
            pending = {
                (tp.topic, tp.partition)
                for tp in positions
                if tp.offset < ranges[(tp.topic, tp.partition)][1]
            }
    finally:
        consumer.close()
    return counts, total_bytes


def restore_all(
    bootstrap: str, namespace: str, partitions: int, workdir: Path
) -> tuple[int, float]:
    """Rebuild every partition's store from ``history`` at once, as a worker taking over
    all of them does: (events, seconds)."""
    names = TopicNames(namespace)
    stores = {
        number: PartitionStore(workdir / f"restore-{namespace}" / f"partition-{number}")
        for number in range(partitions)
    }
    began = time.monotonic()
    try:
        stats = restore_partitions(
            {"bootstrap.servers": bootstrap}, names, stores, topics=(names.history,)
        )
        # Restored: a worker processes from here. Closing the stores (which flushes their
        # memtables, 0.5-0.7 s for 12) is this benchmark's teardown, not the restore.
        seconds = time.monotonic() - began
    finally:
        for store in stores.values():
            store.close()
    return sum(s.history_records for s in stats), seconds


# --- one worker mode --------------------------------------------------------------------


async def run_mode(
    mode: str, bootstrap: str, args: argparse.Namespace, workdir: Path
) -> ModeResult:
    namespace = f"bench{mode}{uuid.uuid4().hex[:6]}"
    result = ModeResult(mode, namespace)
    scenarios: set[str] = args.scenarios
    moddir = workdir / mode
    moddir.mkdir(parents=True, exist_ok=True)
    TopicAdmin({"bootstrap.servers": bootstrap}).create(Catalogue(namespace, args.partitions))
    say(f"\n=== mode {mode}: namespace {namespace}, {args.partitions} partitions ===")
    client = await Client.connect(bootstrap, namespace=namespace)
    processes: WorkerProcesses | None = None
    worker: Worker | None = None
    try:
        if mode == "procs":
            processes = WorkerProcesses(bootstrap, namespace, moddir, args.workflow_processes)
            say(f"worker processes: {processes.pids()}")
        else:
            os.environ["CHRONIK_STATE_DIR"] = str(moddir / "state")
            workflows, activities = load_definitions(MODULES)
            worker = Worker(
                client, task_queue=TASK_QUEUE, workflows=workflows, activities=activities
            )
            await worker.__aenter__()
        say(f"workers ready after {await _wait_ready(client):.1f} s")
        await warm_up(client, args)
        await _measure(
            client,
            result,
            scenarios=scenarios,
            args=args,
            bootstrap=bootstrap,
            processes=processes,
        )
    finally:
        if worker is not None:
            await worker.shutdown()
        if processes is not None:
            processes.stop()
        await client.close()
    if "restore" in scenarios:
        events, seconds = restore_all(bootstrap, namespace, args.partitions, moddir)
        rate = events / seconds if seconds else 0.0
        result.figures["restore_events"] = events
        result.figures["restore_eps"] = rate
        say(
            f"restore: {events:,} history events of {args.partitions} partitions in "
            f"{seconds:.2f} s = {rate:,.0f} events/s   (target {TARGETS['restore']})"
        )
    return result


async def warm_up(client: Client, args: argparse.Namespace) -> None:
    """Warm caches, connections, task topics — and the broker's JIT, until it settles.

    Under load a freshly started broker JIT-compiles for a minute or two with most of a
    core (measured: 0.6 of 2 cores for 50 s, then bursts), and its CPU per workflow halves
    on the way (a broker up for an hour: 0.8 ms per W1 workflow; one minute after its
    start: 1.7 ms). A deployed broker runs for weeks, so the figures are taken after that:
    W1 rounds run until `SETTLED_ROUNDS` rounds in a row used under `JIT_SETTLED` of a core
    for compiling, within ``--warmup-max-s``.
    """
    began = time.monotonic()
    await throughput(client, _w1(client), args.warmup, args.in_flight)
    pid = BROKER_PID.get("broker")
    if pid is None:
        return
    settled = 0
    while time.monotonic() - began < args.warmup_max_s:
        compiled, round_began = jit_cpu_seconds(pid), time.monotonic()
        await throughput(client, _w1(client), WARMUP_ROUND, args.in_flight)
        after = jit_cpu_seconds(pid)
        if compiled is None or after is None:
            return
        share = (after - compiled) / (time.monotonic() - round_began)
        settled = settled + 1 if share < JIT_SETTLED else 0
        if settled == SETTLED_ROUNDS:
            say(f"broker JIT settled after {time.monotonic() - began:.0f} s of warm-up")
            return
    say(f"broker JIT still busy after {args.warmup_max_s:.0f} s of warm-up: measuring anyway")


async def _profiled_throughput(
    client: Client,
    workload: Callable[[str], Awaitable[Any]],
    label: str,
    *,
    result: ModeResult,
    args: argparse.Namespace,
    processes: WorkerProcesses | None,
) -> tuple[float, list[float]]:
    """`throughput` of ``workload``, with py-spy on the worker processes under --profile."""
    pids = processes.pids() if processes else {}
    profiler = Profiler(args.profile, pids, f"{result.mode}-{label}")
    account = CpuAccount({**BROKER_PID, **pids, "driver": os.getpid()})
    try:
        measured = await throughput(client, workload, args.workflows, args.in_flight)
    finally:
        profiler.stop()
    spent = account.spent()
    if spent:
        per = {name: seconds / args.workflows * 1e6 for name, seconds in spent.items()}
        parts = ", ".join(f"{name} {us:,.0f}" for name, us in per.items())
        busy = sum(spent.values()) / measured[0] / (os.cpu_count() or 1)
        say(
            f"{label.upper()} CPU per workflow (us): {parts}; total {sum(per.values()):,.0f} "
            f"(the machine {busy:.0%} busy)"
        )
        for name, us in per.items():
            result.figures[f"{label}_cpu_us_{name}"] = us
    return measured


def _w1(client: Client) -> Callable[[str], Awaitable[Any]]:
    return lambda wid: client.execute_workflow(order.one_activity, id=wid, task_queue=TASK_QUEUE)


def _w2(client: Client) -> Callable[[str], Awaitable[Any]]:
    return lambda wid: client.execute_workflow(
        order.process_order, wid, id=wid, task_queue=TASK_QUEUE
    )


async def _measure(
    client: Client,
    result: ModeResult,
    *,
    scenarios: set[str],
    args: argparse.Namespace,
    bootstrap: str,
    processes: WorkerProcesses | None,
) -> None:
    figures = result.figures
    if "w1" in scenarios:
        samples = await latency(client, LATENCY_SAMPLES)
        figures["w1_p50_ms"] = statistics.median(samples)
        figures["w1_p99_ms"] = _percentile(samples, 0.99)
        say(
            f"W1 latency, one at a time ({LATENCY_SAMPLES}): p50 {figures['w1_p50_ms']:.1f} ms "
            f"(target {TARGETS['p50']}), p99 {figures['w1_p99_ms']:.1f} ms "
            f"(target {TARGETS['p99']}), max {max(samples):.1f} ms"
        )
        partitions = namespace_partitions(bootstrap, result.namespace)
        before = high_watermarks(bootstrap, partitions)
        seconds, loaded = await _profiled_throughput(
            client, _w1(client), "w1", result=result, args=args, processes=processes
        )
        figures["w1_wps"] = args.workflows / seconds
        figures["w1_loaded_p50_ms"] = statistics.median(loaded)
        figures["w1_loaded_p99_ms"] = _percentile(loaded, 0.99)
        say(
            f"W1 throughput: {args.workflows:,} workflows in {seconds:.2f} s = "
            f"{figures['w1_wps']:,.0f} workflows/s (target {TARGETS['w1']}); under load "
            f"p50 {figures['w1_loaded_p50_ms']:.0f} ms, p99 {figures['w1_loaded_p99_ms']:.0f} ms"
        )
        after = high_watermarks(bootstrap, partitions)
        counts, total_bytes = count_records(bootstrap, before, after)
        written = sum(counts.values())
        figures["w1_records"] = written
        figures["w1_records_per_wf"] = written / args.workflows
        figures["w1_record_bytes"] = total_bytes / written if written else 0.0
        per_topic = ", ".join(
            f"{topic.removeprefix(result.namespace + '.')} {n / args.workflows:.1f}"
            for topic, n in sorted(counts.items())
        )
        # Every other offset is a transaction marker: one per partition a transaction wrote to.
        markers = sum(after[k] - before.get(k, 0) for k in after) - written
        figures["w1_markers_per_wf"] = markers / args.workflows
        say(
            f"W1 wrote {written:,} records ({figures['w1_records_per_wf']:.1f} per workflow: "
            f"{per_topic}; {figures['w1_record_bytes']:.0f} bytes each on average) and "
            f"{markers:,} transaction markers ({figures['w1_markers_per_wf']:.1f} per workflow)"
        )
    if "w2" in scenarios:
        seconds, loaded = await _profiled_throughput(
            client, _w2(client), "w2", result=result, args=args, processes=processes
        )
        figures["w2_wps"] = args.workflows / seconds
        figures["w2_loaded_p50_ms"] = statistics.median(loaded)
        say(
            f"W2 throughput: {args.workflows:,} workflows in {seconds:.2f} s = "
            f"{figures['w2_wps']:,.0f} workflows/s (target {TARGETS['w2']}); under load "
            f"p50 {figures['w2_loaded_p50_ms']:.0f} ms"
        )
    if "timer" in scenarios:
        end_to_end, in_history = await timer_lateness(client)
        figures["timer_late_ms"] = statistics.median(end_to_end)
        figures["timer_fire_late_ms"] = statistics.median(in_history)
        say(
            f"timer lateness (2 s workflow.sleep, {TIMER_PROBES} at once): completed "
            f"{figures['timer_late_ms']:.0f} ms late at the client (median; max "
            f"{max(end_to_end):.0f} ms), fired {figures['timer_fire_late_ms']:.0f} ms after "
            f"its due time in the history (max {max(in_history):.0f} ms)"
        )


# --- main -------------------------------------------------------------------------------


def _summary(results: list[ModeResult], baseline: BaselineResult | None) -> None:
    say("\n=== summary ===")
    rows = [
        ("W1 workflows/s", "w1_wps", TARGETS["w1"], "{:,.0f}"),
        ("W1 p50 ms (low load)", "w1_p50_ms", TARGETS["p50"], "{:.1f}"),
        ("W1 p99 ms (low load)", "w1_p99_ms", TARGETS["p99"], "{:.1f}"),
        ("W2 workflows/s", "w2_wps", TARGETS["w2"], "{:,.0f}"),
        ("restore events/s", "restore_eps", TARGETS["restore"], "{:,.0f}"),
        ("timer late ms (client)", "timer_late_ms", "-", "{:.0f}"),
        ("timer fired late ms", "timer_fire_late_ms", "-", "{:.0f}"),
    ]
    header = f"{'':<26}" + "".join(f"{r.mode:>12}" for r in results) + f"  {'target':<22}"
    say(header)
    for label, key, target, fmt in rows:
        if not any(key in r.figures for r in results):
            continue
        cells = "".join(
            f"{fmt.format(r.figures[key]) if key in r.figures else '-':>12}" for r in results
        )
        say(f"{label:<26}{cells}  {target:<22}")
    if baseline is None:
        return
    say(
        f"\nraw Kafka baseline: {baseline.records:,} records of {baseline.value_bytes} bytes "
        f"through a transactional consume-produce loop ({baseline.partitions} partitions, "
        f"{baseline.transactions} transactions) in {baseline.seconds:.2f} s = "
        f"{baseline.records_per_s:,.0f} records/s"
    )
    for r in results:
        per_wf = r.figures.get("w1_records_per_wf")
        wps = r.figures.get("w1_wps")
        if per_wf and wps:
            limit = baseline.records_per_s / per_wf
            say(
                f"  {r.mode}: W1 writes {per_wf:.1f} records per workflow -> the loop's limit is "
                f"{limit:,.0f} workflows/s; Chronik reaches {wps:,.0f} = {wps / limit:.0%} of it"
            )


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chronik-bench-"))
    results: list[ModeResult] = []
    baseline: BaselineResult | None = None
    say(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; work dir {workdir}")
    try:
        with broker(args.bootstrap_servers, workdir, args.broker_pid) as bootstrap:
            for mode in args.modes:
                if args.scenarios & {"w1", "w2", "timer", "restore"}:
                    results.append(await run_mode(mode, bootstrap, args, workdir))
            if "baseline" in args.scenarios:
                records = (
                    max((int(r.figures.get("w1_records", 0)) for r in results), default=0)
                    or args.workflows * 12
                )
                value_bytes = (
                    max((int(r.figures.get("w1_record_bytes", 0)) for r in results), default=0)
                    or 200
                )
                say(f"\n=== baseline: {records:,} records of {value_bytes} bytes ===")
                baseline = await asyncio.to_thread(
                    run_baseline,
                    bootstrap,
                    records,
                    value_bytes=value_bytes,
                    partitions=args.partitions,
                )
                say(f"baseline: {baseline.records_per_s:,.0f} records/s")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    _summary(results, baseline)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_bench", description=__doc__)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("CHRONIK_BENCH_BOOTSTRAP"))
    parser.add_argument(
        "--broker-pid",
        type=int,
        help="with --bootstrap-servers: that broker's PID, to count its CPU per workflow",
    )
    parser.add_argument("--workflows", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument(
        "--warmup", type=int, default=3000, help="W1 workflows run before measuring, per mode"
    )
    parser.add_argument(
        "--warmup-max-s",
        type=float,
        default=300.0,
        help="own broker: keep warming up until its JIT settled, at most this long",
    )
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--scenarios", default="w1,w2,timer,restore,baseline")
    parser.add_argument("--modes", default="inproc,procs")
    parser.add_argument(
        "--workflow-processes",
        type=int,
        default=1,
        help="procs mode: how many `--role workflow` processes share the partitions",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the worker processes into DIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = parser.parse_args(argv)
    args.scenarios = set(filter(None, args.scenarios.split(",")))
    unknown = args.scenarios - {"w1", "w2", "timer", "restore", "baseline"}
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown or not set(args.modes) <= {"inproc", "procs"}:
        parser.error(f"unknown scenarios {sorted(unknown)} or modes {args.modes}")
    return args


def main(argv: list[str] | None = None) -> int:
    configure_logging(level=os.environ.get("CHRONIK_LOG_LEVEL", "WARNING"))
    # The garbage collector as `chronik worker` sets it: the in-process worker and the
    # restore run here, and with CPython's default thresholds the collector walked the
    # restore's pending write batches so often that it cost a quarter of its CPU.
    gc.set_threshold(*GC_THRESHOLDS)
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
