"""What every `chronik` subcommand receives from the global options.

Kept apart from `workers/cli.py` so that a command group (topics, worker, history, ...) can
import it without importing the assembler that imports that group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from runtime.client import Client
from runtime.logging import kafka_logger
from topics.reachability import DEFAULT_TIMEOUT_S, ensure_reachable

T = TypeVar("T")


@dataclass(frozen=True)
class CliContext:
    """The global options: where Kafka is, which namespace, extra librdkafka settings."""

    bootstrap_servers: str
    namespace: str
    kafka_config: dict[str, str] = field(default_factory=dict)

    def client_config(self, **overrides: str) -> dict[str, Any]:
        """librdkafka configuration for a producer, consumer or admin client of this run;
        librdkafka's own log lines go through our logging (else it prints
        ``%6|...|BGQUEUE|...`` lines of its own to stderr)."""
        return {
            **self.kafka_config,
            "bootstrap.servers": self.bootstrap_servers,
            "logger": kafka_logger(),
            **overrides,
        }

    def ensure_kafka(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Fail fast (`KafkaUnreachableError`, rendered by the CLI) when Kafka is not there."""
        ensure_reachable(self.bootstrap_servers, timeout, self.kafka_config)

    def with_client(self, action: Callable[[Client], Awaitable[T]]) -> T:
        """Check Kafka, connect a client, run ``action`` with it, close it; its result."""
        self.ensure_kafka()

        async def main() -> T:
            client = await Client.connect(
                self.bootstrap_servers,
                namespace=self.namespace,
                **dict[str, Any](self.kafka_config),
            )
            try:
                return await action(client)
            finally:
                await client.close()

        return asyncio.run(main())


pass_cli = click.make_pass_decorator(CliContext)
"""Decorator giving a command the `CliContext` as its first argument."""
