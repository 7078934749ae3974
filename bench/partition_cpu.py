"""The workflow worker's CPU per workflow, without Kafka: the part Python pays for alone.

Drives `workers.partition.OwnedPartition` — engine, Avro encoding of every outbound record,
staged RocksDB writes — the way the workflow worker does, with a real store and no broker:
W1 (`examples.order.one_activity`) and W2 (`process_order`, four activities) started with
``await_result`` in batches of 100, every batch's writes applied to RocksDB as after a
commit, then every activity completed. Prints the best of five rounds as CPU microseconds
per workflow and the workflows/s one core could carry if it did nothing else — the ceiling
of one workflow-worker process before Kafka's own costs (consume, produce, broker). Then
the retention of every one of those workflows ends: the CPU per workflow collected
(reading its history, writing its tombstones), a loop step's slice at a time.

    .venv/bin/python -m bench.partition_cpu [--workflows 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from examples.order import WORKFLOWS
from runtime.converter import DataConverter
from runtime.engine import WorkflowRegistry
from runtime.logging import configure_logging
from runtime.messages import ActivityCompletedReport, StartWorkflow
from runtime.store import PartitionStore
from topics import serde
from topics.catalogue import TopicNames
from workers.partition import OwnedPartition

NAMES = TopicNames("bench")
BATCH = 100
ROUNDS = 5


def _complete_tasks(partition: OwnedPartition, now_ms: int) -> int:
    """Commit what is pending, then report every task in it completed; how many there were."""
    pending = partition.take_pending()
    tasks = [
        serde.decode_task(record.value)
        for record in pending.records
        if NAMES.is_task_topic(record.topic) and record.value is not None
    ]
    partition.apply_committed(pending, {})
    for task in tasks:
        done = ActivityCompletedReport(task.workflow_id, task.run_id, task.seq, task.attempt, None)
        partition.handle(done, now_ms)
    return len(tasks)


def run_round(partition: OwnedPartition, workflow_type: str, count: int, tag: str) -> float:
    """CPU seconds to run ``count`` workflows of ``workflow_type`` to completion."""
    converter = DataConverter()
    args = converter.encode(["order-1"]) if workflow_type == "process_order" else ()
    began = time.process_time()
    for first in range(0, count, BATCH):
        for i in range(first, min(first + BATCH, count)):
            workflow_id = f"{tag}-{i}"
            start = StartWorkflow(
                workflow_id, workflow_type, "q", args, f"r-{workflow_id}", reply_to="client",
                await_result=True,
            )  # fmt: skip
            partition.handle(start, 1_000)
        while _complete_tasks(partition, 2_000):
            pass
        partition.apply_committed(partition.take_pending(), {})
    return time.process_time() - began


def end_retentions(partition: OwnedPartition, now_ms: int) -> tuple[int, float]:
    """End every due retention, a loop step's slice at a time, each slice applied as after
    its commit: (workflows collected, CPU seconds)."""
    began, collected = time.process_time(), 0
    while partition.store.due_timers(now_ms, 1, background=True):
        collected += partition.fire_due_timers(now_ms)
        partition.apply_committed(partition.take_pending(), {})
    return collected, time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=2000)
    args = parser.parse_args()
    configure_logging("WARNING")  # figures only, not the partition's debug lines
    with tempfile.TemporaryDirectory() as directory:
        store = PartitionStore(Path(directory) / "p0")
        partition = OwnedPartition(0, store, WorkflowRegistry(WORKFLOWS), NAMES)
        for label, workflow_type in (("W1", "one_activity"), ("W2", "process_order")):
            run_round(partition, workflow_type, BATCH, f"warm-{label}")
            best = min(
                run_round(partition, workflow_type, args.workflows, f"{label}-{n}")
                for n in range(ROUNDS)
            )
            per = best / args.workflows
            print(
                f"{label}: {per * 1e6:,.0f} us CPU per workflow in the partition processor "
                f"(best of {ROUNDS} x {args.workflows:,}) = {1 / per:,.0f} workflows/s on one core"
            )
        after_retention = 2_000 + partition.retention_ms
        collected, seconds = end_retentions(partition, after_retention)
        print(
            f"retention: {collected:,} closed workflows collected in {seconds:.2f} s of CPU = "
            f"{seconds / collected * 1e6:,.0f} us each = {collected / seconds:,.0f}/s on one core"
        )
        partition.close()


if __name__ == "__main__":
    main()
