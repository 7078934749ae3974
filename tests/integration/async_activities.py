"""An activity that completes from outside its worker, in a real ``chronik worker``.

`request_callback` (a plain function: it runs in a worker thread) appends its task token
(one line) to the file ``CHRONIK_TEST_TOKENS`` names, the way an activity hands a payment
provider the id its webhook calls back with, and goes asynchronous.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from runtime import activity, workflow


@activity.defn
def request_callback(order_id: str) -> str:
    with Path(os.environ["CHRONIK_TEST_TOKENS"]).open("ab") as tokens:
        tokens.write(activity.info().task_token + b"\n")
    activity.raise_complete_async()
    return "unreachable"


@workflow.defn
async def paid_by_callback(order_id: str) -> str:
    paid: str = await workflow.execute_activity(
        request_callback, order_id, start_to_close_timeout=timedelta(minutes=10)
    )
    return f"{order_id}: {paid}"


WORKFLOWS = [paid_by_callback]
ACTIVITIES = [request_callback]
