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
    """True when a docker client is installed and its engine answers ``docker info``."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run([docker, "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


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
