"""What every ``chronik`` command that talks to workflows shares: JSON in, JSON out,
and typed errors as one line with an exit code (1: the workflow did not complete, 2: the
request could not be served).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from runtime.client import Client
from runtime.errors import (
    CancelledError,
    ChronikError,
    TerminatedError,
    TimeoutError,
    WorkflowFailureError,
)
from runtime.history_json import to_jsonable
from workers.cli_context import CliContext

T = TypeVar("T")


class RequestNotServed(click.ClickException):
    """Not found, refused, no answer: ``Error: <reason>`` and exit code 2."""

    exit_code = 2


def json_args(values: tuple[str, ...], option: str = "--arg") -> list[Any]:
    """Each of ``values`` (what ``option`` was given) parsed as JSON, or a usage error
    that says which one is not and, for a bare word, how to quote it."""
    parsed = []
    for value in values:
        try:
            parsed.append(json.loads(value))
        except json.JSONDecodeError as error:
            quoted = f"{option} '{json.dumps(value)}'"
            hint = f" (a string is quoted: {quoted})" if _bare(value) else ""
            raise click.BadParameter(
                f"{value!r} is not JSON ({error.msg}){hint}", param_hint=f"'{option}'"
            ) from None
    return parsed


def _bare(value: str) -> bool:
    """Whether ``value`` looks like a string someone forgot to quote (``A-1``, not ``{``)."""
    return bool(value) and value[0] not in '[{"' and value.isprintable()


def _outcome_line(cause: BaseException) -> str:
    """How a run that did not complete ended, in the words of its status."""
    message = str(cause)
    if isinstance(cause, TerminatedError):
        return f"workflow terminated: {message}" if message else "workflow terminated"
    if isinstance(cause, CancelledError):
        return "workflow cancelled" if message in ("", "workflow cancelled") else message
    if isinstance(cause, TimeoutError):
        return f"workflow timed out: {message}"
    return f"workflow failed: {message}"


def print_json(value: Any) -> None:
    """``value`` as one JSON document; None (the command printed its own output) as nothing."""
    if value is not None:
        click.echo(json_line(value))


def json_line(value: Any) -> str:
    return json.dumps(to_jsonable(value), default=str)


def run_action(ctx: CliContext, action: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, run ``action``, close; typed errors become one line and an exit code."""
    try:
        return ctx.with_client(action)
    except WorkflowFailureError as failure:
        click.echo(f"Error: {_outcome_line(failure.cause)}", err=True)
        sys.exit(1)
    except ChronikError as error:
        raise RequestNotServed(str(error)) from None
