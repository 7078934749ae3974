"""docker-compose.yml, exercised as far as a machine without a Docker engine allows.

CI has the docker client but no engine, so the compose file cannot be run as such. What can
go wrong in it can still be caught here: the broker's environment, turned into properties the
way the apache/kafka image does, must start a real Kafka 4.1.1 whose listeners answer; the
worker services' commands and environment, run as they are against that broker's internal
listener, must create the topics and run a workflow to completion; and the image must hold
every package the project installs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from examples.order import process_order
from runtime.client import Client
from tests.conftest import free_ports
from workers import local_kafka

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")
_ADDRESS = re.compile(r"(?:kafka|127\.0\.0\.1)?:(?P<port>19092|9092|9093)\b")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _interpolate(text: str) -> str:
    """Compose's ``${NAME:-default}`` with an empty environment: the defaults."""
    return _VARIABLE.sub(lambda match: match.group("default") or "", text)


def _image_property(variable: str) -> str:
    """The broker property an apache/kafka environment variable sets (the image's rule:
    ``_`` is a dot, ``__`` a dash, ``___`` an underscore)."""
    name = variable.removeprefix("KAFKA_").lower()
    return name.replace("___", "\0").replace("__", "-").replace("_", ".").replace("\0", "_")


@dataclass(frozen=True)
class Ports:
    """The compose network's addresses, mapped to free ports on 127.0.0.1."""

    host: int
    internal: int
    controller: int

    def localize(self, value: str) -> str:
        """``value`` with every compose address (``kafka:19092``, ``:9092``, ...) on
        127.0.0.1 and this test's ports."""
        mapped = {"19092": self.internal, "9092": self.host, "9093": self.controller}
        return _ADDRESS.sub(
            lambda match: f"127.0.0.1:{mapped[match.group('port')]}", _interpolate(value)
        )


def _broker_settings(service: Mapping[str, Any], ports: Ports, data: Path) -> dict[str, str]:
    settings = {
        _image_property(variable): ports.localize(str(value))
        for variable, value in service["environment"].items()
        if variable.startswith("KAFKA_")
    }
    settings["log.dirs"] = str(data / "kraft-logs")  # the image's volume, here a temp dir
    return settings


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[tuple[Ports, dict[str, str]]]:
    """The compose file's broker, started from its environment alone."""
    host, internal, controller = free_ports(3)
    ports = Ports(host, internal, controller)
    settings = _broker_settings(_compose()["services"]["kafka"], ports, tmp_path)
    config = local_kafka.BrokerConfig(
        port=host, controller_port=controller, data_dir=tmp_path,
        settings=tuple(settings.items()),
    )  # fmt: skip
    local_kafka.start(config)
    try:
        yield ports, settings
    finally:
        local_kafka.stop(config)


def _service_process(
    service: Mapping[str, Any], ports: Ports, state: Path, log: Path
) -> subprocess.Popen[bytes]:
    """A chronik service of the compose file: its command and environment, nothing else."""
    command = [_interpolate(str(part)) for part in service["command"]]
    assert command[0] == "chronik"
    environment = {
        name: ports.localize(str(value)) for name, value in service["environment"].items()
    }
    if "CHRONIK_STATE_DIR" in environment:
        environment["CHRONIK_STATE_DIR"] = str(state)
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_")}
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *command[1:]], cwd=ROOT,
            env={**kept, **environment}, stdout=sink, stderr=sink,
        )  # fmt: skip


async def test_the_compose_services_run_a_workflow_without_docker(
    compose_broker: tuple[Ports, dict[str, str]], tmp_path: Path
) -> None:
    ports, _ = compose_broker
    services = _compose()["services"]
    # The healthcheck's address is the broker's internal listener, which answers.
    health = services["kafka"]["healthcheck"]["test"]
    address = ports.localize(health[health.index("--bootstrap-server") + 1])
    assert AdminClient({"bootstrap.servers": address}).list_topics(timeout=10).brokers

    topics = _service_process(services["topics"], ports, tmp_path, tmp_path / "topics.log")
    assert topics.wait(120) == 0, (tmp_path / "topics.log").read_text()
    # PyYAML resolves the services' `<<: *chronik-worker` merge as Compose does.
    workers = [
        _service_process(services[name], ports, tmp_path / name, tmp_path / f"{name}.log")
        for name in ("workflow-worker", "activity-worker")
    ]
    try:
        namespace = services["topics"]["environment"]["CHRONIK_NAMESPACE"]
        client = await Client.connect(f"127.0.0.1:{ports.host}", namespace=_interpolate(namespace))
        try:
            result = await client.execute_workflow(
                process_order, "order-7", id="compose-order-7", task_queue="orders"
            )
        finally:
            await client.close()
        assert result == [f"{step}-order-7" for step in ("payment", "reservation", "shipment",
                                                          "confirmation")]  # fmt: skip
        assert all(worker.poll() is None for worker in workers)
    finally:
        for worker in workers:  # our own children, by PID
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)


def test_the_broker_environment_follows_the_image_naming_rule(tmp_path: Path) -> None:
    ports = Ports(1, 2, 3)
    settings = _broker_settings(_compose()["services"]["kafka"], ports, tmp_path)

    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:3"
    assert settings["advertised.listeners"] == "INTERNAL://127.0.0.1:2,HOST://127.0.0.1:1"
    assert settings["auto.create.topics.enable"] == "false"
    assert _image_property("KAFKA_SOME__DASHED___UNDER_SCORE") == "some-dashed_under.score"


def test_the_image_holds_every_package_the_project_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {
        line.split()[-2].lstrip("./") for line in dockerfile.splitlines() if line.startswith("COPY")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) | {"avro", "examples"} <= copied
    for name in ("workflow-worker", "activity-worker"):
        module = _interpolate(_compose()["services"][name]["command"][2])
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").exists()
