"""CPU time of processes, read from ``/proc``: where a benchmark's cycles went.

On two cores the broker, the workers and the driver compete for the same CPU, so a
throughput figure alone cannot say which of them to make cheaper; CPU per workflow by
process can. Linux only: elsewhere the accounting is empty and the bench prints nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ticks(stat: str) -> int:
    """User + system clock ticks in a ``/proc/.../stat`` line."""
    # The command name (field 2) may hold spaces; the fields after it are space-separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return _ticks(stat) / _TICKS


class CpuAccount:
    """CPU seconds each named process spent between `__init__` and `spent`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def spent(self) -> dict[str, float]:
        out = {}
        for name, pid in self._pids.items():
            before, after = self._start[name], cpu_seconds(pid)
            if before is not None and after is not None:
                out[name] = after - before
        return out


def jit_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of the JVM's JIT compiler threads in ``pid`` (None: not readable).

    A freshly started broker compiles for about a minute under load, using most of a core
    that the workers need: measuring before it settles measures the JIT.
    """
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    total = 0
    for thread in threads:
        try:
            stat = (thread / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if "CompilerThre" in name:  # "C2 CompilerThre", "C1 CompilerThre" (15 chars)
            total += _ticks(stat)
    return total / _TICKS
