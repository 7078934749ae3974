"""``chronik workflow ...``: start workflows and talk to them from a shell.

The same `runtime.Client` a program uses, one command per handle operation. Arguments
and results are JSON (``--arg '"A-17"' --arg 3``), so any workflow can be driven without
importing its code. Outcomes print as one JSON document on stdout; failures as one line on
stderr with exit code 1 (the workflow did not complete), 2 (the request could not be served)
or 3 (``result --timeout`` ran out while the run was still open).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import click

from runtime.client import Client, WorkflowHandle
from runtime.errors import RPCTimeoutError
from runtime.history_json import event_to_dict
from runtime.messages import IdReusePolicy, WorkflowStatus
from workers.cli_client import json_args, json_line, print_json, run_action
from workers.cli_context import CliContext, pass_cli

#: ``result --timeout`` ran out: the run may still be going, which is neither a failed
#: workflow (1) nor a request that could not be served (2).
EXIT_STILL_RUNNING = 3


ARG = click.option("--arg", "args", multiple=True, metavar="JSON", help="An argument; repeatable.")
RUN_ID = click.option("--run-id", default=None, help="A specific run (default: the latest).")


@click.group(short_help="Start, signal, query, cancel, terminate workflows; results.")
def workflow() -> None:
    """Start, signal, query, cancel, terminate workflows; read results and histories."""


@workflow.command(short_help="Start WORKFLOW_TYPE; print its ids (or, with --wait, its result).")
@click.argument("workflow_type")
@click.option("--id", "workflow_id", required=True, help="The workflow id.")
@click.option("--task-queue", "-q", required=True, help="Task queue of its activities.")
@ARG
@click.option(
    "--id-reuse-policy",
    type=click.Choice([p.value for p in IdReusePolicy]),
    default=IdReusePolicy.ALLOW_DUPLICATE.value,
    show_default=True,
)
@click.option(
    "--execution-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Time the run out after this long [default: never].",
)
@click.option(
    "--request-id",
    default=None,
    help="Idempotency key: the same start sent again (a retried script) is the same run.",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option(
    "--signal",
    "signal_name",
    default=None,
    metavar="NAME",
    help="Signal-with-start: an open run of the id gets this signal instead of a new run "
    "starting; a new run gets it first.",
)
@click.option(
    "--signal-arg", "signal_args", multiple=True, metavar="JSON",
    help="An argument of --signal; repeatable.",
)  # fmt: skip
@pass_cli
def start(
    ctx: CliContext,
    *,
    workflow_type: str,
    workflow_id: str,
    task_queue: str,
    args: tuple[str, ...],
    id_reuse_policy: str,
    execution_timeout: float | None,
    request_id: str | None,
    wait: bool,
    signal_name: str | None,
    signal_args: tuple[str, ...],
) -> None:
    """Start WORKFLOW_TYPE; print {"workflow_id", "run_id"} as JSON (with --wait, its result).

    With --signal, the run id printed is the one that got the signal: the open run's, when
    there was one, or the new run's.
    """
    values = json_args(args)
    if signal_args and signal_name is None:
        raise click.UsageError("--signal-arg needs --signal")
    signal_values = json_args(signal_args, "--signal-arg")

    async def action(client: Client) -> Any:
        handle = await client.start_workflow(
            workflow_type,
            *values,
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=IdReusePolicy(id_reuse_policy),
            execution_timeout=(
                timedelta(seconds=execution_timeout) if execution_timeout is not None else None
            ),
            request_id=request_id,
            start_signal=signal_name,
            start_signal_args=signal_values,
        )
        if wait:
            return {"result": await handle.result()}
        return {"workflow_id": workflow_id, "run_id": handle.first_execution_run_id}

    print_json(run_action(ctx, action))


def _handle_command(
    name: str, help_text: str, operation: Callable[[WorkflowHandle], Awaitable[Any]]
) -> None:
    """A command ``NAME WORKFLOW_ID [--run-id]`` that runs ``operation`` on the handle."""

    @workflow.command(name=name, help=help_text)
    @click.argument("workflow_id")
    @RUN_ID
    @pass_cli
    def command(ctx: CliContext, *, workflow_id: str, run_id: str | None) -> None:
        async def action(client: Client) -> Any:
            return await operation(client.get_workflow_handle(workflow_id, run_id=run_id))

        print_json(run_action(ctx, action))


async def _history(handle: WorkflowHandle) -> None:
    for event in await handle.fetch_history():
        sys.stdout.write(json.dumps(event_to_dict(event)) + "\n")


@workflow.command(name="list")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in WorkflowStatus]),
    help="Only workflows in this status; repeatable.",
)  # fmt: skip
@click.option("--type", "workflow_type", default=None, help="Only workflows of this type.")
@click.option("--task-queue", "-q", default=None, help="Only workflows of this task queue.")
@click.option(
    "--task-failing", is_flag=True,
    help="Only open runs whose workflow task fails (stuck until fixed code is deployed).",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@pass_cli
def list_workflows(
    ctx: CliContext,
    *,
    statuses: tuple[str, ...],
    workflow_type: str | None,
    task_queue: str | None,
    task_failing: bool,
    limit: int | None,
) -> None:
    """List the namespace's workflows, newest first, as JSON lines.

    One status record per line: running workflows and closed ones still in retention, read
    from the status topic (no worker needs to run). It reads the whole topic: for many
    millions of workflows, index the topic elsewhere.
    """

    async def action(client: Client) -> None:
        found = client.list_workflows(
            status=[WorkflowStatus(s) for s in statuses] or None,
            workflow_type=workflow_type,
            task_queue=task_queue,
            task_failing=True if task_failing else None,
        )
        printed = 0
        async for record in found:
            if limit is not None and printed == limit:
                break
            sys.stdout.write(json_line(record) + "\n")
            printed += 1

    run_action(ctx, action)


@workflow.command()
@click.argument("workflow_id")
@RUN_ID
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Give up after this long (exit code 3) [default: wait until the run closes].",
)
@pass_cli
def result(ctx: CliContext, *, workflow_id: str, run_id: str | None, timeout: float | None) -> None:
    """Wait for the workflow's result and print it."""

    async def action(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        try:
            return {"result": await handle.result(timeout=timeout)}
        except RPCTimeoutError:
            # Not "is a worker running?": the owner may well be waiting for the run to end.
            click.echo(
                f"Error: workflow {workflow_id!r} did not close within {timeout:g}s "
                f"(`chronik workflow describe {workflow_id}` says where it stands)",
                err=True,
            )
            sys.exit(EXIT_STILL_RUNNING)

    print_json(run_action(ctx, action))


_handle_command(
    "describe",
    "Print the workflow's status and what it waits on.",
    WorkflowHandle.describe,
)
_handle_command("history", "Print the workflow's history as JSON lines.", _history)


@workflow.command()
@click.argument("workflow_id")
@click.argument("signal_name")
@ARG
@RUN_ID
@click.option(
    "--request-id", default=None,
    help="Idempotency key: the same signal sent again (a retried script) is delivered once.",
)  # fmt: skip
@pass_cli
def signal(
    ctx: CliContext,
    *,
    workflow_id: str,
    signal_name: str,
    args: tuple[str, ...],
    run_id: str | None,
    request_id: str | None,
) -> None:
    """Send SIGNAL_NAME to the workflow."""
    values = json_args(args)

    async def action(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        await handle.signal(signal_name, *values, request_id=request_id)

    run_action(ctx, action)


@workflow.command()
@click.argument("workflow_id")
@click.argument("query_name")
@ARG
@RUN_ID
@pass_cli
def query(
    ctx: CliContext, *, workflow_id: str, query_name: str, args: tuple[str, ...], run_id: str | None
) -> None:
    """Ask the workflow QUERY_NAME and print the answer."""
    values = json_args(args)

    async def action(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        return await handle.query(query_name, *values)

    print_json(run_action(ctx, action))


@workflow.command()
@click.argument("workflow_id")
@click.argument("update_name")
@ARG
@RUN_ID
@click.option(
    "--update-id", default=None,
    help="Idempotency key: the same update sent again is answered, not run twice.",
)  # fmt: skip
@pass_cli
def update(
    ctx: CliContext,
    *,
    workflow_id: str,
    update_name: str,
    args: tuple[str, ...],
    run_id: str | None,
    update_id: str | None,
) -> None:
    """Run UPDATE_NAME on the workflow and print its answer."""
    values = json_args(args)

    async def action(client: Client) -> Any:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        return {"result": await handle.execute_update(update_name, *values, id=update_id)}

    print_json(run_action(ctx, action))


@workflow.command()
@click.argument("workflow_id")
@click.option("--reason", default="", help="Recorded in the history.")
@click.option("--terminate", is_flag=True, help="End it at once: no cleanup code runs.")
@RUN_ID
@pass_cli
def cancel(
    ctx: CliContext, *, workflow_id: str, reason: str, terminate: bool, run_id: str | None
) -> None:
    """Request cancellation of the workflow (or terminate it)."""

    async def action(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        await (handle.terminate(reason) if terminate else handle.cancel(reason))

    run_action(ctx, action)


@workflow.command(short_help="End the workflow at once: no cleanup code runs.")
@click.argument("workflow_id")
@click.option("--reason", default="", help="Recorded in the history.")
@RUN_ID
@pass_cli
def terminate(ctx: CliContext, *, workflow_id: str, reason: str, run_id: str | None) -> None:
    """End the workflow at once: no cleanup code runs (as `cancel --terminate`)."""

    async def action(client: Client) -> None:
        await client.get_workflow_handle(workflow_id, run_id=run_id).terminate(reason)

    run_action(ctx, action)
