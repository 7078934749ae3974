"""``chronik history tail``: follow the history topic, one JSON line per event.

The history lines are `runtime.history_json`'s format, so a captured history replays as it
is: ``chronik history tail --workflow ID --from-beginning --idle-exit 2 > h.jsonl`` then
``Replayer(workflows).replay_workflow(Path("h.jsonl"))``.

For auditors and debugging: it reads with ``read_committed`` (only records of committed
transactions, exactly what the workflow owners saw) and join no consumer group, so tailing
never disturbs anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from runtime.history_json import event_to_dict
from topics import serde
from topics.catalogue import TopicNames
from topics.consumed import Consumed, consume_available
from topics.errors import DecodeError, TopicsMissingError
from topics.partitioner import partition_for
from workers.cli_context import CliContext, pass_cli

#: Turns one record into the JSON object to print, or None to skip it.
Render = Callable[[Consumed], dict[str, Any] | None]

FROM_BEGINNING = click.option(
    "--from-beginning", is_flag=True, help="Start at the oldest retained record."
)
MAX_EVENTS = click.option("--max-events", type=int, default=None, help="Stop after this many.")
IDLE_EXIT = click.option(
    "--idle-exit",
    type=float,
    default=None,
    help="Stop after this many seconds without a new record.",
)


@click.group()
def history() -> None:
    """Read workflow histories from Kafka."""


@history.command()
@click.option("--workflow", "workflow_id", default=None, help="Only this workflow id.")
@FROM_BEGINNING
@MAX_EVENTS
@IDLE_EXIT
@pass_cli
def tail(
    ctx: CliContext,
    workflow_id: str | None,
    from_beginning: bool,
    max_events: int | None,
    idle_exit: float | None,
) -> None:
    """Print history events as JSON lines, following new ones."""

    def render(record: Consumed) -> dict[str, Any] | None:
        if record.value is None:  # a tombstone: the end of a closed workflow's retention
            return None
        try:
            event = record.decode(serde.decode_history_event)
        except DecodeError as error:
            click.echo(json.dumps({"error": str(error)}), err=True)
            return None
        if workflow_id is not None and event.workflow_id != workflow_id:
            return None
        return event_to_dict(event)

    topic = TopicNames(ctx.namespace).history
    only = None if workflow_id is None else lambda n: partition_for(workflow_id, n)
    tail_topic(
        ctx,
        topic,
        render,
        only=only,
        from_beginning=from_beginning,
        max_events=max_events,
        idle_exit=idle_exit,
    )


def tail_topic(
    ctx: CliContext,
    topic: str,
    render: Render,
    *,
    only: Callable[[int], int] | None,
    from_beginning: bool,
    max_events: int | None,
    idle_exit: float | None,
) -> None:
    """Assign ``topic``'s partitions (``only``: the one partition that function picks from
    the count) without a group, then print each rendered record until a limit."""
    ctx.ensure_kafka()
    consumer = Consumer(
        ctx.client_config(
            **{
                "group.id": f"{ctx.namespace}.history-tail",  # never joined
                "enable.auto.commit": "false",
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None or not metadata.partitions:
            raise TopicsMissingError(ctx.namespace, [topic])  # one line, exit code 2
        partitions = sorted(metadata.partitions)
        if only is not None:
            partitions = [only(len(partitions))]
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        _follow(consumer, render, max_events, idle_exit)
    finally:
        consumer.close()


def _follow(
    consumer: Consumer, render: Render, max_events: int | None, idle_exit: float | None
) -> None:
    printed, idle = 0, 0.0
    while max_events is None or printed < max_events:
        records = consume_available(consumer, 500, 0.5)
        idle = 0.0 if records else idle + 0.5
        if idle_exit is not None and idle >= idle_exit:
            return
        for message in records:
            if message.error() is not None:
                continue
            line = render(Consumed.of(message))
            if line is None:
                continue
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            printed += 1
            if max_events is not None and printed >= max_events:
                return
