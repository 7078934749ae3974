"""Kafka through Docker Compose, for machines where a Docker engine answers.

`chronik kafka up` prefers the repository's `docker-compose.yml` (official `apache/kafka`
image) when `docker info` succeeds, because that is the same broker users run; without an
engine it falls back to the self-provisioned broker of `workers/local_kafka.py`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SERVICE = "kafka"


def engine_available() -> bool:
    """True when a docker client with the Compose plugin is installed and its engine
    answers ``docker info``."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why ``docker compose`` cannot run the broker here, or None when it can.

    Asked before composing, because without the Compose plugin ``docker compose -f ...``
    fails with the docker client's own confusing ``unknown shorthand flag: 'f' in -f``.
    """
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client is installed"
    checks = (
        (["info"], "no Docker engine answers `docker info`"),
        (["compose", "version"], "the Docker Compose plugin is missing"),
    )
    for args, what in checks:
        try:
            result = subprocess.run(
                [docker, *args], capture_output=True, text=True, timeout=15, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{what} ({error})"
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            return f"{what} ({said[0]})" if said else what
    return None


def compose_file() -> Path | None:
    """The repository's docker-compose.yml: next to the packages, else in the cwd."""
    for candidate in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = candidate / "docker-compose.yml"
        if path.exists():
            return path
    return None


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``docker compose -f <file> <args>``; output is captured for the caller to show."""
    path = compose_file()
    if path is None:
        raise FileNotFoundError("docker-compose.yml not found next to the project or in the cwd")
    return subprocess.run(
        ["docker", "compose", "-f", str(path), *args], capture_output=True, text=True, check=False
    )
