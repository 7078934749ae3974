"""`chronik kafka up | down | status`: a real broker for the demo, the tests and development.

Where a Docker engine answers, the broker is the `kafka` service of `docker-compose.yml`;
otherwise it is the self-provisioned broker of `workers/local_kafka.py`. ``--mode`` (or
``CHRONIK_KAFKA_MODE``) forces one of the two.
"""

from __future__ import annotations

import os
import time

import click

from topics.reachability import KafkaUnreachableError, ensure_reachable
from workers import compose_kafka, local_kafka
from workers.cli_context import CliContext, pass_cli

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

mode_option = click.option(
    "--mode",
    type=click.Choice(["auto", "docker", "local"]),
    default="auto",
    envvar="CHRONIK_KAFKA_MODE",
    show_default=True,
    help="docker: docker compose; local: the self-provisioned broker; auto: docker if an "
    "engine answers.",
)
port_option = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Broker port on 127.0.0.1 [default: the port of --bootstrap-servers when it is "
    "local, else 9092]. The controller listens on port+1.",
)


def _port(cli: CliContext, port: int | None) -> int:
    if port is not None:
        return port
    first = cli.bootstrap_servers.split(",")[0].strip()
    host, _, raw = first.rpartition(":")
    if host in _LOCAL_HOSTS and raw.isdigit():
        return int(raw)
    return local_kafka.DEFAULT_PORT


def _use_docker(mode: str, config: local_kafka.BrokerConfig) -> bool:
    if mode == "docker":
        reason = compose_kafka.unavailable_reason()
        if reason is not None:
            raise click.ClickException(f"--mode docker: {reason}; --mode local needs no Docker")
        return True
    if mode != "auto":
        return False
    if config.pid_file.exists():  # a local broker of ours: keep managing that one
        return False
    return compose_kafka.engine_available()


def _compose_or_fail(*args: str) -> str:
    try:
        result = compose_kafka.compose(*args)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    if result.returncode != 0:
        raise click.ClickException(f"docker compose {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


@click.group("kafka")
def kafka() -> None:
    """Run a real single-node Apache Kafka 4.1 broker on 127.0.0.1."""


@kafka.command("up", short_help="Start the local broker (or reuse it); wait until it answers.")
@mode_option
@port_option
@click.option("--timeout", type=float, default=local_kafka.START_TIMEOUT_S, show_default=True,
              help="Seconds to wait for the broker to answer.")  # fmt: skip
@pass_cli
def up(cli: CliContext, mode: str, port: int | None, timeout: float) -> None:
    """Start the broker (or reuse the running one) and wait until it answers."""
    config = local_kafka.BrokerConfig(port=_port(cli, port))
    if _use_docker(mode, config):
        began = time.monotonic()
        os.environ.setdefault("CHRONIK_KAFKA_PORT", str(config.port))
        _compose_or_fail("up", "-d", compose_kafka.SERVICE)
        _wait_reachable(config.bootstrap, timeout)
        click.echo(f"Kafka (docker compose) answers at {config.bootstrap} "
                   f"after {time.monotonic() - began:.1f}s")  # fmt: skip
        click.echo("logs: docker compose logs kafka")
        return
    try:
        state = local_kafka.start(config, timeout=timeout)
    except local_kafka.LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from None
    if state.reused:
        click.echo(f"Kafka {local_kafka.KAFKA_VERSION} already running at {state.bootstrap} "
                   f"(pid {state.pid}); reused")  # fmt: skip
    else:
        jars = f"jars resolved in {state.provision_s:.1f}s, " if state.provision_s > 1 else ""
        click.echo(f"Kafka {local_kafka.KAFKA_VERSION} running at {state.bootstrap} "
                   f"(pid {state.pid}; {jars}broker ready in {state.start_s:.1f}s)")  # fmt: skip
    click.echo(f"logs: {state.log}")
    if config.port != local_kafka.DEFAULT_PORT:
        click.echo(f"use it with: export CHRONIK_BOOTSTRAP_SERVERS={state.bootstrap}")


def _wait_reachable(bootstrap: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ensure_reachable(bootstrap, timeout=2.0, config={})
            return
        except KafkaUnreachableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@kafka.command("down")
@mode_option
@port_option
@pass_cli
def down(cli: CliContext, mode: str, port: int | None) -> None:
    """Stop the broker that `up` started (by its PID; its data is kept)."""
    config = local_kafka.BrokerConfig(port=_port(cli, port))
    if _use_docker(mode, config):
        _compose_or_fail("stop", compose_kafka.SERVICE)
        click.echo("Kafka (docker compose) stopped")
        return
    pid = local_kafka.stop(config)
    if pid is None:
        click.echo(f"no local Kafka broker of chronik on port {config.port}")
    else:
        click.echo(f"Kafka stopped (pid {pid}); data kept in {config.data}")


@kafka.command("status", short_help="Whether the local broker runs; where its logs are.")
@mode_option
@port_option
@pass_cli
def status(cli: CliContext, mode: str, port: int | None) -> None:
    """Say whether the broker runs, where it listens and where its logs are."""
    config = local_kafka.BrokerConfig(port=_port(cli, port))
    if _use_docker(mode, config):
        click.echo(_compose_or_fail("ps", compose_kafka.SERVICE).rstrip())
        return
    state = local_kafka.status(config)
    if state.running:
        click.echo(f"Kafka running at {state.bootstrap} (pid {state.pid})")
    elif state.pid is not None:
        click.echo(f"Kafka process {state.pid} is alive but not answering at {state.bootstrap}")
    else:
        click.echo(f"Kafka not running on port {config.port} (start it: chronik kafka up)")
    click.echo(f"data: {config.data}")
    click.echo(f"logs: {state.log}")
    if not state.running:
        raise SystemExit(3)


@kafka.command("check", short_help="Check that --bootstrap-servers answers, with the -X settings.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for an answer.")  # fmt: skip
@pass_cli
def check(cli: CliContext, timeout: float) -> None:
    """Check that the cluster at --bootstrap-servers answers (with the -X settings)."""
    cli.ensure_kafka(timeout)
    click.echo(f"Kafka answers at {cli.bootstrap_servers}")
