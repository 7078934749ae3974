"""The `chronik` command: global options, then the command groups of each component.

This file only assembles. Each component owns its group (`workers/kafka_cli.py`, ...), reads
the global options through `workers.cli_context.pass_cli`, and is added below with
`cli.add_command(...)`. Errors every command can meet (Kafka unreachable, a bad setting, the
namespace's topics missing) are rendered here as one line and exit code 2, never as a stack
trace.
"""

from __future__ import annotations

import re

import click

from runtime.logging import configure_logging
from topics.errors import KafkaConfigError, TopicsMissingError
from topics.reachability import KafkaUnreachableError, client_config_from_env
from workers.assignment import CommittedOffsetsError
from workers.cli_activity import activity
from workers.cli_context import CliContext
from workers.cli_dlq import dlq
from workers.cli_history import history
from workers.cli_replay import replay
from workers.cli_timers import timers
from workers.cli_topics import topics
from workers.cli_worker import worker
from workers.cli_workflow import workflow
from workers.kafka_cli import kafka
from workers.membership import WorkerFencedError

EXIT_KAFKA_UNREACHABLE = 2


class KafkaUnreachableExit(click.ClickException):
    """An error about where Kafka is or how it is set up (unreachable, a bad setting, the
    namespace's topics missing) as click renders it: ``Error: <one line>``, exit code 2."""

    exit_code = EXIT_KAFKA_UNREACHABLE


class WorkerStoppedExit(click.ClickException):
    """A worker another process fenced, or one that could not read where its partitions
    start: ``Error: <why>``, exit code 1 (a supervisor restarts it; for a fenced one, a
    second process with the same ``--worker-id`` is the usual cause)."""

    exit_code = 1


class ChronikGroup(click.Group):
    """The root group: turns the errors any subcommand can meet into one-line messages."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (KafkaUnreachableError, KafkaConfigError, TopicsMissingError) as exc:
            raise KafkaUnreachableExit(str(exc)) from None
        except (WorkerFencedError, CommittedOffsetsError) as exc:
            raise WorkerStoppedExit(str(exc)) from None


_NAMESPACE = re.compile(r"[A-Za-z0-9._-]+")
#: Kafka's topic names are at most 249 characters; the longest suffix of the catalogue's
#: fixed topics is ``.inbox.dlq`` (task-queue topics add the queue's name on top).
_MAX_NAMESPACE = 249 - len(".inbox.dlq")


def _check_namespace(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A namespace is the prefix of topic names: refuse one Kafka would refuse, up front
    (``--namespace "bad ns"`` failed only when creating its first topic; ``""`` made
    topics named ``.inbox``)."""
    if not _NAMESPACE.fullmatch(value) or len(value) > _MAX_NAMESPACE:
        raise click.BadParameter(
            f"{value!r} cannot prefix Kafka topic names: use 1 to {_MAX_NAMESPACE} ASCII "
            "letters, digits, '.', '_' or '-'"
        )
    return value


def _parse_settings(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    settings = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        settings[key.strip()] = setting
    return settings


@click.group(cls=ChronikGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bootstrap-servers", envvar="CHRONIK_BOOTSTRAP_SERVERS", default="127.0.0.1:9092",
              show_default=True, show_envvar=True, help="Kafka bootstrap servers.")  # fmt: skip
@click.option("--namespace", envvar="CHRONIK_NAMESPACE", default="chronik", show_default=True,
              show_envvar=True, callback=_check_namespace,
              help="Topic prefix of this Chronik installation.")  # fmt: skip
@click.option("-X", "--kafka-config", "kafka_config", multiple=True, callback=_parse_settings,
              metavar="KEY=VALUE", help="librdkafka setting (SASL/SSL, ...); repeatable. Also "
              "from CHRONIK_RDKAFKA_<KEY> variables, dots as underscores.")  # fmt: skip
@click.pass_context
def cli(
    ctx: click.Context, bootstrap_servers: str, namespace: str, kafka_config: dict[str, str]
) -> None:
    """Chronik: durable-execution workflows in plain async Python, on Apache Kafka."""
    configure_logging()
    ctx.obj = CliContext(
        bootstrap_servers=bootstrap_servers,
        namespace=namespace,
        kafka_config={**client_config_from_env(), **kafka_config},
    )


cli.add_command(kafka)
cli.add_command(topics)
cli.add_command(worker)
cli.add_command(history)
cli.add_command(dlq)
cli.add_command(timers)
cli.add_command(workflow)
cli.add_command(activity)
cli.add_command(replay)


def main() -> None:
    """Console-script entry point (``chronik``)."""
    cli()


if __name__ == "__main__":
    main()
