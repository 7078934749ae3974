"""``chronik kafka ... --mode docker`` on a machine whose docker cannot compose."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from workers import compose_kafka
from workers.cli import cli

FAKE_DOCKER = """#!/bin/sh
# A docker client whose engine answers but which has no Compose plugin.
if [ "$1" = info ]; then exit 0; fi
echo "docker: unknown command: docker $1" >&2
exit 1
"""


@pytest.fixture
def docker_without_compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}")


@pytest.mark.usefixtures("docker_without_compose")
def test_docker_mode_without_the_compose_plugin_says_so() -> None:
    """It failed with docker's own "unknown shorthand flag: 'f' in -f", and auto mode
    picked docker there (its engine answered), failing the same way."""
    done = CliRunner().invoke(cli, ["kafka", "up", "--mode", "docker"])
    assert done.exit_code == 1
    assert done.output == (
        "Error: --mode docker: the Docker Compose plugin is missing (docker: unknown command: "
        "docker compose); --mode local needs no Docker\n"
    )
    assert compose_kafka.unavailable_reason() is not None
    assert not compose_kafka.engine_available()  # so auto mode uses the local broker


def test_no_docker_client_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert compose_kafka.unavailable_reason() == "no docker client is installed"
