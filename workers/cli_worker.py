"""``chronik worker``: run workflow and activity workers from Python modules.

Each module named on the command line lists what it offers in two module-level lists,
``WORKFLOWS`` and ``ACTIVITIES`` (see ``examples/order.py``). Every workflow worker of a
namespace owns inbox partitions that may hold any workflow type, so every workflow worker
of a namespace must be started with the same workflow modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from runtime.worker_spec import WorkerSpec
from workers.cli_context import CliContext, pass_cli
from workers.kafka_host import Cluster, Role, run_kafka_worker

#: The worker process allocates a few hundred objects per inbox message and keeps tens of
#: thousands of live workflows (coroutines, futures) in its cache. CPython's default
#: (700, 10, 10) collects the young generation every 700 allocations and walks that cache
#: far too often; with these thresholds the workflow worker spent about 15 % less CPU per
#: message and the benchmark's W2 went from 169 to 206 workflows/s (docs/benchmarks.md).
GC_THRESHOLDS = (50_000, 50, 100)


def load_definitions(module_names: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    """The WORKFLOWS and ACTIVITIES of each module, imported as ``python -m`` would: from
    the current directory first (a console script's ``sys.path`` starts at its own
    directory, so ``chronik worker my_app`` did not find ``./my_app.py``)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    workflows: list[Any] = []
    activities: list[Any] = []
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise click.BadParameter(f"cannot import {name!r}: {error}") from None
        found_workflows = list(getattr(module, "WORKFLOWS", []))
        found_activities = list(getattr(module, "ACTIVITIES", []))
        if not found_workflows and not found_activities:
            raise click.BadParameter(f"module {name!r} defines neither WORKFLOWS nor ACTIVITIES")
        workflows += found_workflows
        activities += found_activities
    return workflows, activities


@click.command()
@click.argument("modules", nargs=-1, required=True)
@click.option("--task-queue", "-q", required=True, help="Task queue of the activities.")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.ALL.value,
    show_default=True,
    help="Run the workflow worker, the activity worker, or both.",
)
@click.option(
    "--worker-id",
    envvar="CHRONIK_WORKER_ID",
    default=None,
    help="Stable id of this replica (transactional id, state directory).",
)
@click.option(
    "--state-dir",
    envvar="CHRONIK_STATE_DIR",
    type=click.Path(path_type=Path),
    default=None,
    help="Where partition stores live.",
)
@click.option("--max-concurrent-activities", default=200, show_default=True)
@click.option(
    "--retention-seconds",
    type=float,
    envvar="CHRONIK_RETENTION_SECONDS",
    default=7 * 24 * 3600,
    show_default=True,
    help="How long closed workflows keep their history, status and result.",
)
@click.option(
    "--no-timers",
    is_flag=True,
    help="Do not fire timers here: a `chronik timers` service does.",
)
@pass_cli
def worker(
    ctx: CliContext,
    *,
    modules: tuple[str, ...],
    task_queue: str,
    role: str,
    worker_id: str | None,
    state_dir: Path | None,
    max_concurrent_activities: int,
    no_timers: bool,
    retention_seconds: float,
) -> None:
    """Run a worker for MODULES (each with WORKFLOWS / ACTIVITIES lists) until SIGTERM."""
    ctx.ensure_kafka()
    gc.set_threshold(*GC_THRESHOLDS)
    workflows, activities = load_definitions(modules)
    spec = WorkerSpec(
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        max_concurrent_activities=max_concurrent_activities,
    )
    asyncio.run(
        _serve(
            ctx,
            spec,
            Role(role),
            worker_id,
            state_dir,
            fire_timers=not no_timers,
            retention_s=retention_seconds,
        )
    )


async def _serve(
    ctx: CliContext,
    spec: WorkerSpec,
    role: Role,
    worker_id: str | None,
    state_dir: Path | None,
    *,
    fire_timers: bool,
    retention_s: float,
) -> None:
    cluster = Cluster(ctx.bootstrap_servers, ctx.namespace, dict(ctx.kafka_config))
    job = asyncio.ensure_future(
        run_kafka_worker(
            cluster,
            spec,
            role=role,
            worker_id=worker_id,
            state_dir=state_dir,
            fire_timers=fire_timers,
            retention_s=retention_s,
        )
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, job.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await job
