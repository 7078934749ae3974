"""The pool sync activities run in lets the process exit while one of them never returns."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from runtime.daemon_pool import DaemonThreadPool

#: A process that leaves a call blocked in the pool, then returns from its main module.
LEAVES_A_BLOCKED_CALL = """
import threading
from runtime.daemon_pool import DaemonThreadPool

pool = DaemonThreadPool(max_workers=1, thread_name_prefix="blocked")
pool.submit(threading.Event().wait)
pool.shutdown(wait=False, cancel_futures=True)
"""


@pytest.fixture
def pool() -> Iterator[DaemonThreadPool]:
    pool = DaemonThreadPool(max_workers=2, thread_name_prefix="test-pool")
    yield pool
    pool.shutdown()


def test_a_process_exits_with_a_call_still_blocked_in_the_pool() -> None:
    """A `ThreadPoolExecutor` is joined at exit: a stopped worker whose sync activity
    ignored its cancellation never exited."""
    subprocess.run([sys.executable, "-c", LEAVES_A_BLOCKED_CALL], check=True, timeout=30)


def test_calls_return_their_results_and_errors_on_reused_threads(pool: DaemonThreadPool) -> None:
    first = pool.submit(threading.current_thread).result(5)
    second = pool.submit(threading.current_thread).result(5)
    with pytest.raises(ZeroDivisionError):
        pool.submit(divmod, 1, 0).result(5)

    assert second is first and first.daemon  # an idle thread takes the next call
    assert first.name.startswith("test-pool")


def test_calls_beyond_max_workers_wait_and_a_shutdown_can_cancel_them(
    pool: DaemonThreadPool,
) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)

    def holds_its_thread() -> bool:
        entered.release()
        return release.wait(5)

    busy = [pool.submit(holds_its_thread) for _ in range(2)]
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)  # both threads taken
    waiting = pool.submit(threading.current_thread)

    pool.shutdown(wait=False, cancel_futures=True)
    release.set()

    assert [call.result(5) for call in busy] == [True, True]
    assert waiting.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(threading.current_thread)


def test_an_abandoned_call_frees_its_place_and_its_thread_ends_with_it() -> None:
    """The activity worker frees an abandoned attempt's slot: the pool must have a thread
    for the next call, and the one left running must not stay on past ``max_workers``."""
    pool = DaemonThreadPool(max_workers=1, thread_name_prefix="test-abandon")
    release, entered = threading.Event(), threading.Event()

    def holds_its_thread() -> threading.Thread:
        entered.set()
        release.wait(5)
        return threading.current_thread()

    try:
        held = pool.submit(holds_its_thread)
        assert entered.wait(5)
        queued = pool.submit(threading.current_thread)  # no thread free: it waits
        assert not pool.abandon(queued) and queued.cancelled()  # never started
        assert pool.abandoned_running() == 0  # a call never started holds no thread
        assert pool.abandon(held)
        assert pool.abandoned_running() == 1

        other = pool.submit(threading.current_thread).result(5)  # before `held` returns
        release.set()
        held_thread = held.result(5)
        held_thread.join(5)

        assert other is not held_thread and not held_thread.is_alive()
        assert pool.abandoned_running() == 0
        assert pool.submit(threading.current_thread).result(5) is other
        assert not pool.abandon(held)  # done: nothing left to abandon
    finally:
        release.set()
        pool.shutdown()
