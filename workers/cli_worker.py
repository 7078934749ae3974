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
import re
import signal
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import structlog
from prometheus_client import CollectorRegistry

from runtime.definitions import (
    ActivityDefinition,
    WorkflowDefinition,
    activity_definition,
    workflow_definition,
)
from runtime.worker_spec import DEFAULT_GRACEFUL_SHUTDOWN, WorkerSpec
from workers.cli_context import CliContext, pass_cli
from workers.kafka_host import Cluster, Role, default_state_dir, run_kafka_worker
from workers.metrics import MetricsServer, serve

log = structlog.get_logger(__name__)

#: The worker process allocates a few hundred objects per inbox message and keeps tens of
#: thousands of live workflows (coroutines, futures) in its cache. CPython's default
#: (700, 10, 10) collects the young generation every 700 allocations and walks that cache
#: far too often; with these thresholds the workflow worker spent about 15 % less CPU per
#: message and the benchmark's W2 went from 169 to 206 workflows/s (docs/benchmarks.md).
GC_THRESHOLDS = (50_000, 50, 100)


def load_definitions(module_names: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    """The WORKFLOWS and ACTIVITIES of each module, imported as ``python -m`` would: from
    the current directory first (a console script's ``sys.path`` starts at its own
    directory, so ``chronik worker my_app`` did not find ``./my_app.py``).

    Anything wrong with a module is a `click.BadParameter` naming it (rendered as one
    line, exit code 2), never a traceback: a module that fails to import (with where it
    failed), a path given for a module name, lists that are not lists or hold something
    undecorated, and two different definitions of one workflow or activity name (the
    registry would silently keep the last one).
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # One argument may list several, as CHRONIK_APP="app.orders app.billing" does in the
    # compose file's exec-form command (a module name holds neither spaces nor commas).
    module_names = tuple(name for arg in module_names for name in re.split(r"[\s,]+", arg) if name)
    workflows: dict[str, tuple[object, Any, str]] = {}
    activities: dict[str, tuple[object, Any, str]] = {}
    for name in module_names:
        module = _import(name)
        found_workflows = _listed(module, name, "WORKFLOWS")
        found_activities = _listed(module, name, "ACTIVITIES")
        if not found_workflows and not found_activities:
            raise click.BadParameter(f"module {name!r} defines neither WORKFLOWS nor ACTIVITIES")
        for item in found_workflows:
            _collect(workflows, "workflow", workflow_definition(item), item, name)
        for item in found_activities:
            _collect(activities, "activity", activity_definition(item), item, name)
    return [item for _, item, _ in workflows.values()], [i for _, i, _ in activities.values()]


def _collect(
    seen: dict[str, tuple[object, Any, str]],
    kind: str,
    defn: WorkflowDefinition | ActivityDefinition | None,
    item: Any,
    module: str,
) -> None:
    """Add one listed definition; refuse an undecorated one and a second of one name."""
    if defn is None:
        listing, a = ("ACTIVITIES", "an") if kind == "activity" else ("WORKFLOWS", "a")
        raise click.BadParameter(
            f"{listing} of module {module!r} holds {item!r}, which is not {a} @{kind}.defn {kind}"
        )
    if defn.name in seen:
        first, _, where = seen[defn.name]
        if first is not defn:
            raise click.BadParameter(
                f"{kind} type {defn.name!r} is defined twice: in module {where!r} and in "
                f"module {module!r}"
            )
        return
    seen[defn.name] = (defn, item, module)


def _import(name: str) -> Any:
    if name.endswith(".py") or os.sep in name:
        dotted = name.removesuffix(".py").replace(os.sep, ".").strip(".")
        raise click.BadParameter(
            f"{name!r} is a path: name the module as Python imports it ({dotted!r}), "
            "from the directory that holds it"
        )
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise click.BadParameter(f"cannot import {name!r}: {error}") from None
    except Exception as error:  # the module's own code raised (a SyntaxError, a bad import)
        where = ""
        frames = traceback.extract_tb(error.__traceback__)
        if frames and not isinstance(error, SyntaxError):
            where = f" (at {frames[-1].filename}, line {frames[-1].lineno})"
        raise click.BadParameter(
            f"importing {name!r} raised {type(error).__name__}: {error}{where}"
        ) from None


def _listed(module: Any, module_name: str, attr: str) -> list[Any]:
    value = getattr(module, attr, [])
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise click.BadParameter(f"{attr} of module {module_name!r} must be a list, not {value!r}")
    return list(value)


STATE_DIR_HELP = (
    "Where partition stores live (a cache of Kafka, safe to delete) [default: ./.chronik/state]."
)


def usable_state_dir(state_dir: Path | None) -> Path:
    """``state_dir`` (or the default), created and writable, else a `click.BadParameter`:
    a file there, or a directory the worker may not write, failed only once a partition
    was assigned, as a traceback from deep in the store."""
    path = state_dir or default_state_dir()
    if path.exists() and not path.is_dir():
        raise click.BadParameter(
            f"cannot use {str(path)!r}: it is a file, not a directory", param_hint="'--state-dir'"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.BadParameter(
            f"cannot use {str(path)!r}: {error.strerror or error}", param_hint="'--state-dir'"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise click.BadParameter(
            f"cannot use {str(path)!r}: not writable by this user", param_hint="'--state-dir'"
        )
    return path


@click.command(short_help="Run workflow and/or activity workers for MODULES.")
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
    help=STATE_DIR_HELP,
)
@click.option(
    "--max-concurrent-activities",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Activities this worker runs at once; further tasks wait.",
)
@click.option(
    "--graceful-shutdown-timeout",
    "graceful_shutdown_s",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    envvar="CHRONIK_GRACEFUL_SHUTDOWN_TIMEOUT",
    default=DEFAULT_GRACEFUL_SHUTDOWN.total_seconds(),
    show_default=True,
    help=(
        "On SIGTERM, how long running activities may finish before they are cancelled; "
        "one still running 5 s after its cancellation is abandoned (it runs again elsewhere)."
    ),
)
@click.option(
    "--retention-seconds",
    type=click.FloatRange(min=0),
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
@click.option(
    "--metrics-port", type=click.IntRange(min=0, max=65535), envvar="CHRONIK_METRICS_PORT",
    default=None, help="Serve Prometheus metrics at http://HOST:PORT/metrics [default: none].",
)  # fmt: skip
@click.option(
    "--metrics-host", envvar="CHRONIK_METRICS_HOST", default="127.0.0.1", show_default=True,
    help="The address --metrics-port binds (0.0.0.0: every interface, as in a container).",
)  # fmt: skip
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
    graceful_shutdown_s: float,
    no_timers: bool,
    retention_seconds: float,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker for MODULES (each with WORKFLOWS / ACTIVITIES lists) until SIGTERM."""
    try:
        workflows, activities = load_definitions(modules)
    except click.BadParameter as error:
        error.param_hint = "'MODULES'"
        raise
    _check_role(Role(role), modules, workflows, activities)
    if Role(role) is not Role.ACTIVITY:  # an activity worker keeps no partition stores
        state_dir = usable_state_dir(state_dir)
    ctx.ensure_kafka()
    gc.set_threshold(*GC_THRESHOLDS)
    spec = WorkerSpec(
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=graceful_shutdown_s),
    )
    registry = CollectorRegistry()
    server = None if metrics_port is None else _serve_metrics(registry, metrics_host, metrics_port)
    try:
        asyncio.run(
            _serve(
                ctx,
                spec,
                Role(role),
                worker_id,
                state_dir,
                fire_timers=not no_timers,
                retention_s=retention_seconds,
                metrics=registry,
            )
        )
    finally:
        if server is not None:
            server.close()


def _serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    try:
        server = serve(registry, host, port)
    except OSError as error:  # taken, or an address this machine does not have
        raise click.BadParameter(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}",
            param_hint="'--metrics-port'",
        ) from None
    log.info("metrics served", url=f"http://{host}:{server.port}/metrics")
    return server


def _check_role(
    role: Role, modules: tuple[str, ...], workflows: list[Any], activities: list[Any]
) -> None:
    """A role with nothing to run is a usage error, said before anything connects."""
    listed = ", ".join(modules)
    if role is Role.WORKFLOW and not workflows:
        raise click.UsageError(f"--role workflow needs WORKFLOWS, and {listed} list none")
    if role is Role.ACTIVITY and not activities:
        raise click.UsageError(f"--role activity needs ACTIVITIES, and {listed} list none")


async def _serve(
    ctx: CliContext,
    spec: WorkerSpec,
    role: Role,
    worker_id: str | None,
    state_dir: Path | None,
    *,
    fire_timers: bool,
    retention_s: float,
    metrics: CollectorRegistry,
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
            metrics=metrics,
        )
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, job.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await job
