"""``chronik dlq tail`` and ``chronik dlq redrive``: the records the workflow workers refused.

Tail reads them as JSON lines (why, and where the original is on the inbox); redrive moves
them back onto the inbox once the cause is gone (`workers.dlq_redrive`), each exactly once.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import click

from topics import dead_letters
from topics.catalogue import TopicNames
from topics.consumed import Consumed
from workers.cli_context import CliContext, pass_cli
from workers.cli_history import FROM_BEGINNING, IDLE_EXIT, MAX_EVENTS, tail_topic
from workers.dlq_redrive import Outcome, redrive


@click.group(short_help="The dead letters: inbox records the workers refused.")
def dlq() -> None:
    """Read the dead-letter topic, and move its records back onto the inbox."""


@dlq.command(name="tail", short_help="Print dead letters as JSON lines, following new ones.")
@FROM_BEGINNING
@MAX_EVENTS
@IDLE_EXIT
@click.option("--values", is_flag=True, help="Include each record's value, base64.")
@pass_cli
def dlq_tail(
    ctx: CliContext,
    from_beginning: bool,
    max_events: int | None,
    idle_exit: float | None,
    values: bool,
) -> None:
    """Print dead letters as JSON lines: why, and where the original is on the inbox.

    `chronik dlq tail --from-beginning --idle-exit 2` lists what is there and exits.
    """

    def render(record: Consumed) -> dict[str, Any]:
        return dead_letter_to_dict(record, with_value=values)

    topic = TopicNames(ctx.namespace).inbox_dlq
    tail_topic(
        ctx,
        topic,
        render,
        only=None,
        from_beginning=from_beginning,
        max_events=max_events,
        idle_exit=idle_exit,
    )


def dead_letter_to_dict(record: Consumed, *, with_value: bool = False) -> dict[str, Any]:
    """One record of ``<ns>.inbox.dlq`` as an operator reads it (headers by name)."""
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
    key = record.key or b""
    value = record.value or b""
    out: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "reason": headers.get(dead_letters.REASON),
        "source": dead_letters.source(dict(record.headers)),
        "key": key.decode("utf-8", "backslashreplace"),
        "value_bytes": len(value),
        "value_head": value[:16].hex(),
    }
    if dead_letters.REDRIVEN_FROM in headers:  # refused again after a redrive
        out["redriven_from"] = headers[dead_letters.REDRIVEN_FROM]
    if dead_letters.TRUNCATED in headers:
        out["truncated"] = True
        out["original_size"] = int(headers.get(dead_letters.ORIGINAL_SIZE, "0"))
    if with_value:
        out["value_base64"] = base64.b64encode(value).decode()
    return out


@dlq.command(name="redrive", short_help="Move the dead letters back onto the inbox, each once.")
@click.option("--dry-run", is_flag=True, help="Say what would be moved; move nothing.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Move at most this many.")
@pass_cli
def redrive_command(ctx: CliContext, dry_run: bool, limit: int | None) -> None:
    """Move the dead letters not moved yet back onto the inbox, once the cause is gone.

    For records the workers refused while they could not take them: a schema version
    they did not know yet, an engine error since fixed. Each goes back to the inbox
    partition it came from, with a `chronik.redriven_from` header; the consumer group
    `<namespace>.dlq-redrive` remembers how far the moves went, committed in the same
    transaction, so a second run moves nothing twice. One JSON line per dead letter
    says what became of it; a record the workers refuse again returns to the
    dead-letter topic, with its reason.
    """
    ctx.ensure_kafka()
    outcomes = redrive(ctx.client_config(), TopicNames(ctx.namespace), dry_run=dry_run, limit=limit)
    for outcome in outcomes:
        click.echo(json.dumps(outcome_to_dict(outcome, dry_run=dry_run)))
    moved = sum(1 for o in outcomes if o.destination is not None)
    verb = "would move" if dry_run else "moved"
    click.echo(
        f"{verb} {moved} dead letter(s) back onto {TopicNames(ctx.namespace).inbox}; "
        f"{len(outcomes) - moved} passed over",
        err=True,
    )


def outcome_to_dict(outcome: Outcome, *, dry_run: bool) -> dict[str, Any]:
    """A dead letter's line (`dead_letter_to_dict`) and what the redrive did with it."""
    line = dead_letter_to_dict(outcome.record)
    if outcome.destination is None:
        line["outcome"] = "passed over"
        line["why"] = outcome.passed_over
    else:
        line["outcome"] = "would move" if dry_run else "moved"
        line["destination"] = outcome.destination
    return line
