"""Say so, with the offending line, when code blocks an event loop.

Async activities share the activity worker's event loop with its polling, heartbeats and
reports. One that calls blocking code (``time.sleep``, a blocking HTTP client, a long
computation) stops all of that: the other activities stall, heartbeats stop (their
timeouts then fail attempts that are fine), and once ``max.poll.interval.ms`` passes
without a poll the worker leaves its group and its tasks are delivered again elsewhere.
Nothing on the loop can notice, because it is the loop that is stuck; a thread can. The
warning carries the loop thread's stack, which names the blocking call, and the fix:
make the activity a plain ``def`` (it then runs in the thread pool) or await
``asyncio.to_thread`` around the blocking call.

The worker itself blocks its loop in one place: `topics.transient.produce_when_room`,
while librdkafka's producer queue is full and the reports wait for Kafka to take earlier
records. There the innermost frames are that function's, and the warning names the
producer and Kafka instead: blaming the activities sent the operator to code that was
fine while the broker or the network was what to look at.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

import structlog

from topics.transient import produce_when_room

log = structlog.get_logger(__name__)

#: Innermost frames of the loop thread's stack shown in the warning: the blocking call and
#: the activity that made it, without the worker's own frames above them.
STACK_FRAMES = 6

#: What the warning says for each cause: the ``cause`` field, then the diagnosis and fix.
_BLOCKING_CODE = (
    "blocking code",
    "an async activity runs blocking code (make it a plain def, which runs in the thread "
    "pool, or await asyncio.to_thread around the blocking call)",
)
_PRODUCER_FULL = (
    "producer queue full",
    "the Kafka producer's queue is full (queue.buffering.max.messages or "
    "queue.buffering.max.kbytes), and producing waits for Kafka to take earlier records: "
    "the broker is slow or unreachable, or records are produced faster than it takes "
    "them. Look at the broker and the network (librdkafka's log lines of this worker "
    "say which); raise the queue's size only if the broker keeps up",
)


class LoopWatch:
    """A thread that checks that ``loop`` runs a tick every ``threshold_s / 4`` seconds.

    ``running`` names what the loop is running (the activities in flight), for the warning.
    One warning per stall, and one line when the loop runs again, with how long it stood.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold_s: float,
        running: Callable[[], list[str]],
        what: str,
    ) -> None:
        if threshold_s <= 0:
            raise ValueError(f"threshold_s must be positive, not {threshold_s!r}")
        self._loop = loop
        self._threshold_s = threshold_s
        self._interval_s = threshold_s / 4
        self._running = running
        self._what = what
        self._last_tick = time.monotonic()
        self._loop_thread: int | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chronik-loop-watch", daemon=True)

    def start(self) -> None:
        """Call on the loop's thread: the stack shown is that thread's."""
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._thread.is_alive():
            self._thread.join()

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self._tick_handle = self._loop.call_later(self._interval_s, self._tick)

    def _watch(self) -> None:
        blocked_since: float | None = None
        while not self._stopped.wait(self._interval_s):
            last = self._last_tick
            stood = time.monotonic() - last
            if stood >= self._threshold_s and blocked_since != last:
                blocked_since = last
                self._warn(stood)
            elif blocked_since is not None and last != blocked_since:
                log.info(
                    f"the {self._what} event loop runs again",
                    blocked_s=round(last - blocked_since, 1),
                )
                blocked_since = None

    def _warn(self, stood: float) -> None:
        frame = sys._current_frames().get(self._loop_thread or -1)
        cause, diagnosis = _diagnose(frame)
        log.warning(
            f"the {self._what} event loop is blocked: {diagnosis}",
            cause=cause,
            blocked_s=round(stood, 1),
            running=self._running_names(),
            stack=_innermost(frame),
        )

    def _running_names(self) -> list[str]:
        try:
            return self._running()
        except RuntimeError:  # changed while read: the loop moved on after all
            return []


def _diagnose(frame: FrameType | None) -> tuple[str, str]:
    """Why the loop stands, from its innermost frames: waiting for room in the producer's
    queue (a delivery callback may run inside that wait, a frame or two further in), or
    else code the activities run."""
    for _ in range(STACK_FRAMES):
        if frame is None:
            break
        if frame.f_code is produce_when_room.__code__:
            return _PRODUCER_FULL
        frame = frame.f_back
    return _BLOCKING_CODE


def _innermost(frame: FrameType | None) -> str:
    if frame is None:
        return ""
    return "".join(traceback.format_stack(frame)[-STACK_FRAMES:])
