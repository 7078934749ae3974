"""``chronik topics create | check``: the namespace's topics, as the catalogue defines them.

Errors are one readable line, never a stack trace: exit code 2 when the cluster has a
topic Chronik cannot use (or, for ``check``, a topic is missing or differs), 1 for other
failures of the admin client.
"""

from __future__ import annotations

import click

from topics.admin import TopicAdmin
from topics.catalogue import DEFAULT_PARTITIONS, DEFAULT_REPLICATION_FACTOR, Catalogue
from topics.errors import KafkaUnavailableError, TopicMismatchError
from workers.cli_context import CliContext, pass_cli

EXIT_MISMATCH = 2


class MismatchExit(click.ClickException):
    """A topic differs from the catalogue: ``Error: <what>`` and exit code 2."""

    exit_code = EXIT_MISMATCH


@click.group()
def topics() -> None:
    """Create and check the namespace's Kafka topics."""


@topics.command()
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="Partitions of inbox, history, timers, status [default: the existing "
              f"inbox's, {DEFAULT_PARTITIONS} for a new namespace].")  # fmt: skip
@click.option("--replication-factor", type=click.IntRange(min=1),
              default=DEFAULT_REPLICATION_FACTOR, show_default=True,
              help="Replicas per partition (3 on a production cluster).")  # fmt: skip
@pass_cli
def create(ctx: CliContext, partitions: int | None, replication_factor: int) -> None:
    """Create the missing topics; existing ones must already match."""
    ctx.ensure_kafka()
    catalogue = Catalogue(ctx.namespace, partitions or DEFAULT_PARTITIONS, replication_factor)
    admin = TopicAdmin(ctx.client_config())
    try:
        catalogue = admin.resolve(catalogue, infer_partitions=partitions is None)
        created = admin.create(catalogue)
    except TopicMismatchError as exc:
        hint = ""
        if exc.setting == "partitions":
            hint = " (a namespace's partition count cannot change; without --partitions the "
            hint += "existing count is kept)"
        raise MismatchExit(f"{exc}; nothing was created{hint}") from None
    except KafkaUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    for name in created:
        click.echo(f"created {name}")
    count = f"{catalogue.partitions} partition{'s' if catalogue.partitions != 1 else ''}"
    click.echo(f"namespace {ctx.namespace}: {len(catalogue.topics())} topics ready "
               f"({len(created)} created, {count})")  # fmt: skip


@topics.command(short_help="Compare the topics with the catalogue; exit 2 on a mismatch.")
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="Expected partition count [default: the inbox's].")  # fmt: skip
@pass_cli
def check(ctx: CliContext, partitions: int | None) -> None:
    """Compare the namespace's topics with the catalogue; exit code 2 on a mismatch."""
    ctx.ensure_kafka()
    catalogue = Catalogue(ctx.namespace, partitions or DEFAULT_PARTITIONS)
    try:
        mismatches = TopicAdmin(ctx.client_config()).check(
            catalogue, infer_partitions=partitions is None
        )
    except KafkaUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    for mismatch in mismatches:
        prefix = "error" if mismatch.fatal else "warning"
        click.echo(f"{prefix}: {mismatch}", err=True)
    fatal = [m for m in mismatches if m.fatal]
    if fatal:
        hint = ""
        if any(m.setting == "exists" for m in fatal):
            hint = f"; `chronik --namespace {ctx.namespace} topics create` creates what is missing"
        raise MismatchExit(f"{len(fatal)} topic problem(s) in namespace {ctx.namespace}{hint}")
    click.echo(f"namespace {ctx.namespace}: topics OK")
