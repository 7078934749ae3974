"""What the shutdown tests run, in a real ``chronik worker`` process and in-process alike.

`ignores_cancellation` appends ``<idempotency key> <pid>`` to the file
``CHRONIK_TEST_STARTED`` once running, so that a test knows when to stop the worker and
which process ran the attempt, and then blocks its thread until `released` is set —
never, in a worker process: Python cannot stop a thread, so only a worker that gives up
on it can exit. An in-process test sets it once done, so the thread ends with the test.
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

from runtime import RetryPolicy, activity, workflow

released = threading.Event()


@activity.defn
def ignores_cancellation() -> str:
    with Path(os.environ["CHRONIK_TEST_STARTED"]).open("a") as started:
        started.write(f"{activity.info().idempotency_key} {os.getpid()}\n")
    released.wait()  # activity.is_cancelled() goes unread
    return "done"


@workflow.defn
async def one_attempt(activity_name: str) -> str:
    """Runs the activity once: a stop that spent its attempt would fail the workflow."""
    result: str = await workflow.execute_activity(
        activity_name,
        start_to_close_timeout=timedelta(seconds=120),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )
    return result


WORKFLOWS = [one_attempt]
ACTIVITIES = [ignores_cancellation]
