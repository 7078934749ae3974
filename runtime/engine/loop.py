"""The deterministic event loop workflow code runs on.

A minimal `asyncio.AbstractEventLoop`: a FIFO of ready callbacks and no I/O. Time is the
history's time; `call_later`/`call_at` (which `asyncio.sleep`, `asyncio.wait_for` and
`asyncio.timeout` use) become durable timers through the owning `WorkflowRuntime`. So
plain asyncio code (`gather`, tasks, `wait_for`) runs unchanged and in the same order on
every replay. The loop never blocks: `run_ready` runs what is ready and returns.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class TimerHost(Protocol):
    """What the loop needs from its owner: the clock and durable timers."""

    @property
    def now_ms(self) -> int: ...

    def start_timer(self, handle: asyncio.TimerHandle, delay_ms: int) -> None: ...

    def cancel_timer(self, handle: asyncio.TimerHandle) -> None: ...

    def report_exception(self, context: dict[str, Any]) -> None: ...


class DeterministicLoop(asyncio.AbstractEventLoop):
    def __init__(self, host: TimerHost) -> None:
        # Weak: the host owns the loop, and a cycle between them would leave every finished
        # run to the cycle collector instead of reference counting (docs/engine.md, "Memory").
        self._host_ref = weakref.ref(host)
        self._ready: deque[asyncio.Handle] = deque()
        self._closed = False

    @property
    def host(self) -> TimerHost:
        host = self._host_ref()
        if host is None:
            raise RuntimeError("the workflow run this loop belonged to is gone")
        return host

    # --- what asyncio primitives use ------------------------------------------------------

    def time(self) -> float:
        host = self._host_ref()
        return host.now_ms / 1000.0 if host is not None else 0.0  # gone: its clock stopped

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        delay_ms = round(delay * 1000)
        handle = asyncio.TimerHandle(self.time() + delay, callback, args, self, context)
        host = self._host_ref()
        if delay_ms <= 0:
            self._ready.append(handle)
        elif host is not None:  # else the run is gone: nothing can fire it any more
            host.start_timer(handle, delay_ms)
        return handle

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_later(when - self.time(), callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        host = self._host_ref()
        if host is not None:
            host.cancel_timer(handle)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> asyncio.Task[_T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        host = self._host_ref()
        if host is not None:  # else a task of a run already gone is being collected
            host.report_exception(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    # --- driving ---------------------------------------------------------------------------

    def fire(self, handle: asyncio.TimerHandle) -> None:
        """A durable timer fired: its callback becomes ready (unless cancelled meanwhile)."""
        if not handle.cancelled():
            self._ready.append(handle)

    def has_ready(self) -> bool:
        return bool(self._ready)

    def run_ready(self) -> None:
        """Run ready callbacks until none is left, as if this loop were the running loop."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle.cancelled():
                    handle._run()
        finally:
            asyncio.events._set_running_loop(previous)

    def run_in_context(self, fn: Callable[[], _T]) -> _T:
        """Call `fn` as if on this loop (queries and update validators), without running tasks."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            return fn()
        finally:
            asyncio.events._set_running_loop(previous)
