"""The thread pool sync activities run in (the Kafka activity worker's and the in-memory
environment's): one whose threads never hold the process.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits
(its threads are not daemons since Python 3.9), so a sync activity that never returns —
one that ignores `activity.is_cancelled()` — kept a stopped worker's process alive for
good, after the worker itself had given up on the activity. Python cannot stop a thread;
a daemon thread at least lets the process end, and the attempt it ran is at-least-once:
it runs again elsewhere. Threads are reused, as in `ThreadPoolExecutor`, so activities
keep their thread-local state (connections, sessions) across calls.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, NamedTuple, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Call(NamedTuple):
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class DaemonThreadPool(Executor):
    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        #: Released by a thread each time it finished a call and waits for the next: a
        #: submit takes an idle thread before it starts another.
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._calls.put(_Call(future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                self._start_thread()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut_down = True
            threads = list(self._threads)
        if cancel_futures:
            self._cancel_waiting()
        for _ in threads:
            self._calls.put(None)  # each thread ends once it took one
        if wait:
            for thread in threads:
                thread.join()

    def _start_thread(self) -> None:
        name = f"{self._prefix}_{len(self._threads)}"
        thread = threading.Thread(target=self._serve, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            _run(call)
            del call  # its arguments and result are not kept alive while this waits
            self._idle.release()

    def _cancel_waiting(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                call.future.cancel()


def _run(call: _Call) -> None:
    if not call.future.set_running_or_notify_cancel():
        return
    try:
        result = call.fn(*call.args, **call.kwargs)
    except BaseException as error:  # the caller's to see, as ThreadPoolExecutor does
        call.future.set_exception(error)
    else:
        call.future.set_result(result)
