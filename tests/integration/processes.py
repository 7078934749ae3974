"""Real `chronik` processes for integration tests, killed by their own PID."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ChronikProcess:
    """One ``chronik <args>`` subprocess; ``kill()`` is ``kill -9`` of exactly that PID."""

    bootstrap: str
    namespace: str
    args: tuple[str, ...]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChronikProcess:
        command = [
            sys.executable,
            "-m",
            "workers.cli",
            "--bootstrap-servers",
            self.bootstrap,
            "--namespace",
            self.namespace,
            *self.args,
        ]
        env = {**os.environ, "CHRONIK_LOG_FORMAT": "json", **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crashed machine."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


async def run_chronik(
    bootstrap: str, namespace: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``chronik --bootstrap-servers ... --namespace ... ARGS`` to its end, as from a shell."""
    command = [sys.executable, "-m", "workers.cli", "--bootstrap-servers", bootstrap]
    return await asyncio.to_thread(
        subprocess.run,
        [*command, "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
