"""Threads for the test environment's sync activities, which no test waits for at its end.

The environment ran sync activities in the event loop's default pool, which `asyncio.run`
joins as it closes the loop: a sync activity the workflow had timed out in virtual time
(a ``time.sleep(30)`` standing in for a slow service) kept the test 30 real seconds after
its workflow had finished. Python cannot stop a thread; a daemon one at least keeps
neither the loop's close nor the interpreter's exit waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DaemonThreads(Executor):
    """Runs each call on a daemon thread of its own: the environment runs every activity
    at once anyway (it has no concurrency limit), so a pool would only queue them."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="chronik-memory-activity", daemon=True).start()
        return future
