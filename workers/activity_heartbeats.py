"""An attempt's heartbeats: throttled on the way to the inbox, and watched for silence.

An activity may heartbeat in a tight loop, and each heartbeat sent is an inbox record the
workflow worker processes; so at most one goes per interval, yet the newest details are
never dropped (dropping them once timed out a live activity). And a heartbeat timeout is
kept here too, not only by the engine: the engine's cancellation may wait behind tasks of
partitions paused because every slot is taken, and the local check frees the slot anyway.
The state both keep lives on the attempt (`RunningAttempt`); `workers.activity_worker`
calls these as its activities heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from runtime.messages import ActivityHeartbeat
from runtime.payloads import Payload
from workers.activity_attempts import CancelReason, RunningAttempt


class HeartbeatThrottle:
    """Sends the heartbeats of a worker's attempts through ``send``, at most one per
    interval: 0.8 of the attempt's heartbeat timeout, or ``default_interval_s`` without
    one (heartbeats are still sent then: their details survive a retry)."""

    def __init__(
        self, send: Callable[[ActivityHeartbeat], None], default_interval_s: float
    ) -> None:
        self._send = send
        self._default_interval_s = default_interval_s

    def heartbeat(self, running: RunningAttempt, details: tuple[Payload, ...]) -> None:
        """Send at most one heartbeat per interval (0.8 of the heartbeat timeout), and the
        newest details at the end of an interval in which some were held back: dropping
        them once timed out an activity that heartbeat every 0.55 of its timeout."""
        task = running.task
        running.last_beat = time.monotonic()
        interval = (
            task.heartbeat_timeout_ms * 0.8 / 1000
            if task.heartbeat_timeout_ms
            else self._default_interval_s
        )
        running.unsent = details
        wait = running.last_heartbeat + interval - time.monotonic()
        if wait <= 0:
            self._send_unsent(running)
        elif running.trailing is None:
            loop = asyncio.get_running_loop()
            running.trailing = loop.call_later(wait, self._send_unsent, running)

    def _send_unsent(self, running: RunningAttempt) -> None:
        if running.trailing is not None:
            running.trailing.cancel()
            running.trailing = None
        details, running.unsent = running.unsent, None
        if details is None:
            return
        running.last_heartbeat = time.monotonic()
        task = running.task
        self._send(
            ActivityHeartbeat(task.workflow_id, task.run_id, task.seq, task.attempt, details)
        )


def watch_heartbeats(running: RunningAttempt) -> None:
    """Cancel the attempt once a heartbeat timeout passed without a heartbeat."""
    quiet_for = time.monotonic() - running.last_beat
    left = running.task.heartbeat_timeout_ms / 1000 - quiet_for
    if left <= 0:
        running.cancel(CancelReason.HEARTBEAT)
        running.watchdog = None
    else:
        loop = asyncio.get_running_loop()
        running.watchdog = loop.call_later(left, watch_heartbeats, running)
