"""A sync activity the workflow timed out in virtual time does not hold the test.

Python cannot stop a thread, so a sync activity that ignores its cancellation runs on. In
the event loop's default pool, which `asyncio.run` joins as it closes, it kept the test
waiting, in real time, for as long as the activity slept after its workflow had finished.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from runtime import ActivityError, RetryPolicy, activity, workflow
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

#: The slow service sleeps this long; the test must end far sooner.
SERVICE_SECONDS = 6.0
REAL_TIME_BOUND_S = 2.5

answered = threading.Event()


@activity.defn
def calls_a_slow_service() -> str:
    answered.wait(SERVICE_SECONDS)  # blind to `activity.is_cancelled()`
    return "answered"


@workflow.defn
async def gives_up_on_the_service() -> str:
    try:
        answer: str = await workflow.execute_activity(
            calls_a_slow_service,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
    except ActivityError:
        return "timed out"
    return answer


async def _run_the_workflow() -> str:
    async with (
        WorkflowEnvironment.start_time_skipping() as env,
        Worker(
            env.client,
            task_queue="q",
            workflows=[gives_up_on_the_service],
            activities=[calls_a_slow_service],
        ),
    ):
        outcome: str = await env.client.execute_workflow(
            gives_up_on_the_service, id="slow", task_queue="q"
        )
        return outcome


def test_a_test_ends_without_waiting_for_a_sync_activity_its_workflow_timed_out() -> None:
    answered.clear()
    began = time.monotonic()
    try:
        outcome = asyncio.run(_run_the_workflow())  # the loop closed, as at a test's end
        real = time.monotonic() - began
    finally:
        answered.set()  # the thread ends now, not in some later test

    assert outcome == "timed out"
    assert real < REAL_TIME_BOUND_S < SERVICE_SECONDS


@activity.defn
def answers_at_once() -> str:
    return "answered"


@workflow.defn
async def asks_once() -> str:
    answer: str = await workflow.execute_activity(
        answers_at_once, start_to_close_timeout=timedelta(seconds=5)
    )
    return answer


async def _ask_once_in_an_environment() -> set[threading.Thread]:
    """Run one sync activity in a fresh environment; the threads it ran on."""
    async with (
        WorkflowEnvironment.start_time_skipping() as env,
        Worker(env.client, task_queue="q", workflows=[asks_once], activities=[answers_at_once]),
    ):
        assert await env.client.execute_workflow(asks_once, id="once", task_queue="q") == (
            "answered"
        )
        return {t for t in threading.enumerate() if t.name.startswith("chronik-test-activity")}


def test_a_closed_environment_leaves_no_idle_activity_thread_behind() -> None:
    """Each environment has a pool of its own: left open, every test that ran a sync
    activity left its idle threads waiting for calls forever, and a suite's thousands of
    environments piled them up in the test process."""
    threads = asyncio.run(_ask_once_in_an_environment())

    assert threads
    for thread in threads:
        thread.join(5)
    assert not [t.name for t in threads if t.is_alive()]
