"""Shared fixtures: one real Kafka broker per test session, one namespace per test.

`kafka_bootstrap` uses ``CHRONIK_BOOTSTRAP_SERVERS`` when it is set (an existing broker or
cluster, e.g. the one `chronik kafka up` started); otherwise it provisions a broker with
`workers.local_kafka` on free ports and a data dir of this session, and stops it, by its PID,
when the session ends. The jar cache (``CHRONIK_KAFKA_HOME``) is shared across sessions, so
only the first run on a machine pays for resolving the jars.

Tests that use these fixtures are marked ``kafka`` automatically: ``pytest -m "not kafka"``
runs the pure tests only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from topics.reachability import client_config_from_env, ensure_reachable
from workers import local_kafka

KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "kafka_config"})


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 (held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker with ``kafka``."""
    for item in items:
        if KAFKA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def local_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[local_kafka.BrokerConfig | None]:
    """The broker this session started, or None when the suite uses an existing one."""
    if os.environ.get("CHRONIK_BOOTSTRAP_SERVERS"):
        yield None
        return
    port, controller_port = free_ports(2)
    config = local_kafka.BrokerConfig(
        port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka")
    )
    local_kafka.start(config)
    try:
        yield config
    finally:
        local_kafka.stop(config)


@pytest.fixture(scope="session")
def kafka_bootstrap(local_broker: local_kafka.BrokerConfig | None) -> str:
    """``host:port`` of a real Kafka broker that answers metadata requests."""
    if local_broker is not None:
        return local_broker.bootstrap
    bootstrap = os.environ["CHRONIK_BOOTSTRAP_SERVERS"]
    ensure_reachable(bootstrap, timeout=15.0)
    return bootstrap


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> dict[str, str]:
    """librdkafka base configuration: bootstrap servers plus ``CHRONIK_RDKAFKA_*`` settings."""
    return {**client_config_from_env(), "bootstrap.servers": kafka_bootstrap}


@pytest.fixture
def namespace() -> str:
    """A namespace (topic prefix) of this test alone, e.g. ``t3f9a0c1b2d``."""
    return f"t{uuid.uuid4().hex[:10]}"
