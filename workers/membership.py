"""How our consumers join their groups, so a crashed worker's partitions move quickly.

A worker killed with ``kill -9`` never leaves its group: the coordinator notices only when
its session times out, and until then nobody processes its partitions. A short session
bounds that pause. A worker started with a stable id (``--worker-id``,
``CHRONIK_WORKER_ID``) also joins as a *static* member: when it restarts, it gets its
partitions back at once, with no rebalance of the others.
"""

from __future__ import annotations

SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 2_000


def membership_config(worker_id: str, *, stable_id: bool) -> dict[str, str | int]:
    config: dict[str, str | int] = {
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
    }
    if stable_id:
        config["group.instance.id"] = worker_id
    return config
