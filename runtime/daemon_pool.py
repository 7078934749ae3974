"""The thread pool sync activities run in (the Kafka activity worker's and the in-memory
environment's): one whose threads never hold the process.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits
(its threads are not daemons since Python 3.9), so a sync activity that never returns —
one that ignores `activity.is_cancelled()` — kept a stopped worker's process alive for
good, after the worker itself had given up on the activity. Python cannot stop a thread;
a daemon thread at least lets the process end, and the attempt it ran is at-least-once:
it runs again elsewhere. Threads are reused, as in `ThreadPoolExecutor`, so activities
keep their thread-local state (connections, sessions) across calls.

A caller that gives up on a running call (`abandon`) frees its place in the pool: the
thread runs on, outside ``max_workers``, and ends when the call returns. The activity
worker frees an abandoned attempt's slot, so a pool of ``max_concurrent`` threads that
kept counting such threads ran out of them, and every later sync activity waited for one
until its deadline timed it out, never run.
"""

from __future__ import annotations

import functools
import itertools
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
        self._threads: set[threading.Thread] = set()
        self._names = itertools.count()
        #: Calls given up on while they ran (`abandon`); their threads end with them.
        self._abandoned: set[Future[Any]] = set()
        #: Calls a thread runs now.
        self._running: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._calls.put(_Call(future, fn, args, kwargs))
            counted = len(self._threads) - len(self._abandoned)
            if not self._idle.acquire(blocking=False) and counted < self._max_workers:
                self._start_thread()
        return future

    def abandon(self, future: Future[Any]) -> bool:
        """Stop waiting for ``future``'s call: cancel it if no thread took it yet, and if
        one runs it, let that thread out of ``max_workers`` (it ends when the call
        returns, Python cannot stop it sooner). Whether the call was still running."""
        if future.cancel():  # not started; outside the lock, as its callbacks may submit
            return False
        with self._lock:
            if future not in self._running:  # over (a running one is in it, `_serve`)
                return False
            self._abandoned.add(future)
            return True

    def abandoned_running(self) -> int:
        """How many threads still run a call given up on (`abandon`). Python cannot stop
        them, and each holds what its call holds (a connection, memory, a lock): the
        count, watched over time, is how an operator sees them pile up."""
        with self._lock:
            return len(self._abandoned)

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
        name = f"{self._prefix}_{next(self._names)}"
        thread = threading.Thread(target=self._serve, name=name, daemon=True)
        thread.start()
        self._threads.add(thread)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            with self._lock:  # `abandon` tells a call that runs from one not yet started
                started = call.future.set_running_or_notify_cancel()
                if started:
                    self._running.add(call.future)
            if not started:  # cancelled while it waited
                del call
                self._idle.release()
                continue
            settle = _outcome(call)
            with self._lock:  # before the caller can see the outcome and submit again
                self._running.discard(call.future)
                abandoned = call.future in self._abandoned
                if abandoned:  # a thread in its place serves on
                    self._abandoned.discard(call.future)
                    self._threads.discard(threading.current_thread())
                else:
                    self._idle.release()
            settle()
            if abandoned:
                return
            del call, settle  # its arguments and result are not kept alive while this waits

    def _cancel_waiting(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                call.future.cancel()


def _outcome(call: _Call) -> Callable[[], None]:
    """Run the call; what then sets its future's result or error."""
    try:
        result = call.fn(*call.args, **call.kwargs)
    except BaseException as error:  # the caller's to see, as ThreadPoolExecutor does
        return functools.partial(call.future.set_exception, error)
    return functools.partial(call.future.set_result, result)
