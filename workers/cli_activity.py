"""``chronik activity complete|fail|heartbeat``: finish an activity attempt from a shell.

For an attempt that went asynchronous (`activity.raise_complete_async`), by its task
token; and for any open activity an operator resolves by hand — its external system is
gone for good, say — by workflow id and sequence number, as `describe` lists them: the
attempt is the current one, and its worker's own report, if it ever comes, is then ignored
as a late one. The report goes to the inbox as a worker's would
(`runtime.async_activity.AsyncActivityHandle`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import click

from runtime import ApplicationError
from runtime.async_activity import AsyncActivityHandle
from runtime.client import Client
from runtime.epoch import datetime_of
from runtime.messages import PendingActivityState
from runtime.task_token import InvalidTaskTokenError, TaskToken
from workers.cli_client import RequestNotServed, json_args, print_json, run_action
from workers.cli_context import CliContext, pass_cli

Send = Callable[[AsyncActivityHandle], Awaitable[None]]


@click.group(short_help="Complete, fail or heartbeat an activity from outside its worker.")
def activity() -> None:
    """Send an activity attempt's outcome, or a heartbeat, as its worker would."""


def _attempt_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.argument("workflow_id", required=False),
            click.argument("seq", type=click.IntRange(min=1), required=False),
            click.option("--token", default=None, help="The attempt's task token."),
            click.option("--run-id", default=None, help="The run (default: the latest)."),
            click.option(
                "--attempt",
                type=click.IntRange(min=1),
                default=None,
                help="The attempt (default: the activity's current one).",
            ),
        )
    ):
        command = option(command)
    return command


def _send(
    ctx: CliContext,
    send: Send,
    what: str,
    *,
    workflow_id: str | None,
    seq: int | None,
    token: str | None,
    run_id: str | None,
    attempt: int | None,
) -> None:
    """Name the attempt (``--token``, or ``WORKFLOW_ID SEQ``), send to it, print which."""
    if (token is None) == (workflow_id is None or seq is None):
        raise click.UsageError("name the attempt with --token, or with WORKFLOW_ID and SEQ")
    if token is not None and (workflow_id, run_id, attempt) != (None, None, None):
        raise click.UsageError("--token names the attempt: no WORKFLOW_ID, --run-id, --attempt")

    async def action(client: Client) -> dict[str, Any]:
        if token is not None:
            try:
                named = TaskToken.decode(token)
            except InvalidTaskTokenError as error:
                raise click.BadParameter(str(error), param_hint="'--token'") from None
        else:
            assert workflow_id is not None and seq is not None
            named = await _current_attempt(client, workflow_id, seq, run_id, attempt)
        await send(AsyncActivityHandle(client, named))
        return {"sent": what, **dataclasses.asdict(named)}

    print_json(run_action(ctx, action))


async def _current_attempt(
    client: Client, workflow_id: str, seq: int, run_id: str | None, attempt: int | None
) -> TaskToken:
    """The open activity ``seq`` of the run, as its owner describes it now."""
    described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    pending = described.pending_activity(seq)
    if pending is None:
        open_ones = ", ".join(str(p.seq) for p in described.pending_activities) or "none"
        raise RequestNotServed(
            f"workflow {workflow_id!r} (run {described.run_id}) has no open activity {seq} "
            f"(open: {open_ones})"
        )
    if pending.state is PendingActivityState.BACKOFF:  # the owner would ignore it
        raise RequestNotServed(
            f"activity {seq} of workflow {workflow_id!r} is between attempts: attempt "
            f"{pending.attempt + 1} is dispatched at {_when(pending.next_attempt_time_ms)}"
            "; it can be sent to once that attempt runs"
        )
    return TaskToken(workflow_id, described.run_id, seq, attempt or pending.attempt)


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "a time not known"
    return datetime_of(epoch_ms).isoformat(timespec="seconds")


@activity.command(short_help="The attempt succeeded (with --result).")
@_attempt_options
@click.option("--result", default="null", metavar="JSON", help="Its result [default: null].")
@pass_cli
def complete(ctx: CliContext, /, *, result: str, **attempt: Any) -> None:
    """The attempt succeeded with --result: the workflow's await returns it."""
    [value] = json_args((result,), "--result")

    async def send(handle: AsyncActivityHandle) -> None:
        await handle.complete(value)

    _send(ctx, send, "completed", **attempt)


@activity.command(short_help="The attempt failed (--message); its retry policy decides.")
@_attempt_options
@click.option("--message", required=True, help="Why it failed.")
@click.option("--type", "error_type", default="", help="The error's type, for the retry policy.")
@click.option("--non-retryable", is_flag=True, help="No further attempt, whatever the policy.")
@pass_cli
def fail(
    ctx: CliContext, /, *, message: str, error_type: str, non_retryable: bool, **attempt: Any
) -> None:
    """The attempt failed with an ApplicationError of --message (and --type): the retry
    policy decides whether another attempt follows, unless --non-retryable."""
    error = ApplicationError(message, type=error_type, non_retryable=non_retryable)

    async def send(handle: AsyncActivityHandle) -> None:
        await handle.fail(error)

    _send(ctx, send, "failed", **attempt)


@activity.command(short_help="The attempt is alive (with --detail to resume from).")
@_attempt_options
@click.option("--detail", "details", multiple=True, metavar="JSON", help="Repeatable.")
@pass_cli
def heartbeat(ctx: CliContext, /, *, details: tuple[str, ...], **attempt: Any) -> None:
    """The attempt goes on: what keeps one with a heartbeat timeout alive; --detail are
    the details a retry resumes from."""
    values = json_args(details, "--detail")

    async def send(handle: AsyncActivityHandle) -> None:
        await handle.heartbeat(*values)

    _send(ctx, send, "heartbeat", **attempt)
