"""Activities completed from outside their worker: `activity.raise_complete_async` and
`Client.get_async_activity_handle`. Each test runs live and restored at every message."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from runtime import (
    ActivityError,
    ActivityNotCurrentError,
    ApplicationError,
    RetryPolicy,
    TimeoutError,
    WorkflowFailureError,
    activity,
    workflow,
)
from runtime.task_token import InvalidTaskTokenError, TaskToken
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

#: The task token of every attempt that went asynchronous, in order.
tokens: list[bytes] = []


@pytest.fixture(autouse=True)
def _no_tokens() -> None:
    tokens.clear()


@activity.defn
async def ask_approver(ticket: str) -> str:
    tokens.append(activity.info().task_token)
    activity.raise_complete_async()
    raise AssertionError("raise_complete_async returned")


@activity.defn
def ask_approver_in_a_thread(ticket: str) -> str:
    tokens.append(activity.info().task_token)
    activity.raise_complete_async()
    raise AssertionError("raise_complete_async returned")


@workflow.defn
async def approval(ticket: str, sync: bool, heartbeat_minutes: int) -> str:
    result: str = await workflow.execute_activity(
        ask_approver_in_a_thread if sync else ask_approver,
        ticket,
        start_to_close_timeout=timedelta(hours=1),
        heartbeat_timeout=timedelta(minutes=heartbeat_minutes) if heartbeat_minutes else None,
        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2),
    )
    return result


def _worker(env: WorkflowEnvironment) -> Worker:
    return Worker(
        env.client,
        task_queue="q",
        workflows=[approval],
        activities=[ask_approver, ask_approver_in_a_thread],
    )


async def _tokens(count: int) -> list[bytes]:
    """Once ``count`` attempts went asynchronous (real time passes, virtual time does not)."""
    for _ in range(500):
        if len(tokens) >= count:
            return list(tokens)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(tokens)} attempts went asynchronous, not {count}")


@pytest.mark.parametrize("sync", [False, True], ids=["async-def", "thread"])
async def test_an_activity_completed_from_outside_gives_the_workflow_its_result(
    env: WorkflowEnvironment, sync: bool
) -> None:
    async with _worker(env):
        handle = await env.client.start_workflow(
            approval, "T-1", sync, 0, id=f"approve-{sync}", task_queue="q"
        )
        [token] = await _tokens(1)
        run_id = handle.first_execution_run_id or ""
        assert TaskToken.decode(token) == TaskToken(f"approve-{sync}", run_id, 1, 1)
        pending = (await handle.describe()).pending_activities
        assert [p.attempt for p in pending] == [1]  # the worker reported nothing
        await env.client.get_async_activity_handle(token).complete("approved by ann")
        assert await handle.result() == "approved by ann"


async def test_a_failure_from_outside_is_the_activity_s_exception(
    env: WorkflowEnvironment,
) -> None:
    async with _worker(env):
        handle = await env.client.start_workflow(
            approval, "T-2", False, 0, id="a-2", task_queue="q"
        )
        [token] = await _tokens(1)
        refused = ApplicationError("ann said no", type="Refused", non_retryable=True)
        await env.client.get_async_activity_handle(token).fail(refused)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, ActivityError)
    assert isinstance(failed.value.cause.cause, ApplicationError)
    assert failed.value.cause.cause.type == "Refused"
    assert tokens == [token]  # non-retryable: no second attempt


async def test_the_attempt_s_timeout_still_runs_and_a_late_completion_is_ignored(
    env: WorkflowEnvironment,
) -> None:
    async with _worker(env):
        handle = await env.client.start_workflow(
            approval, "T-3", False, 0, id="a-3", task_queue="q"
        )
        [first] = await _tokens(1)
        await env.sleep(3601)  # start-to-close ends attempt 1; attempt 2 goes asynchronous
        second = (await _tokens(2))[1]
        assert TaskToken.decode(second).attempt == 2
        await env.client.get_async_activity_handle(first).complete("too late")
        await env.client.get_async_activity_handle(second).complete("in time")
        assert await handle.result() == "in time"


async def test_heartbeats_from_outside_keep_the_attempt_alive(
    env: WorkflowEnvironment,
) -> None:
    async with _worker(env):
        beating = await env.client.start_workflow(
            approval, "T-4", False, 10, id="a-4", task_queue="q"
        )
        silent = await env.client.start_workflow(
            approval, "T-5", False, 10, id="a-5", task_queue="q"
        )
        await _tokens(2)
        by_workflow = {TaskToken.decode(t).workflow_id: t for t in tokens}
        for minutes in (8, 16, 24):  # more than twice the heartbeat timeout in all
            await env.client.get_async_activity_handle(by_workflow["a-4"]).heartbeat("half")
            await env.sleep(8 * 60)
            if minutes == 16:  # the silent one's heartbeat timeout ended its attempt 1
                [retried] = (await silent.describe()).pending_activities
                assert retried.attempt == 2 and retried.last_failure is not None
                assert retried.last_failure.timeout_type == "heartbeat"
        [pending] = (await beating.describe()).pending_activities
        assert pending.attempt == 1 and pending.last_heartbeat_time_ms is not None
        assert env.client.data_converter.decode(pending.heartbeat_details) == ["half"]
        await env.client.get_async_activity_handle(by_workflow["a-4"]).complete("done")
        assert await beating.result() == "done"
        with pytest.raises(WorkflowFailureError) as silent_failed:  # both attempts timed out
            await silent.result()
    assert isinstance(silent_failed.value.cause, ActivityError)
    assert isinstance(silent_failed.value.cause.cause, TimeoutError)


async def test_a_heartbeat_from_outside_hears_when_its_attempt_is_over(
    env: WorkflowEnvironment,
) -> None:
    """Timed out, then retried: the system holding the old token is told to stop."""
    async with _worker(env):
        handle = await env.client.start_workflow(
            approval, "T-6", False, 0, id="a-6", task_queue="q"
        )
        [first] = await _tokens(1)
        await env.client.get_async_activity_handle(first).heartbeat("working")  # current
        await env.sleep(3600.5)  # start-to-close ended attempt 1; attempt 2 is 1 s away
        with pytest.raises(ActivityNotCurrentError) as in_backoff:
            await env.client.get_async_activity_handle(first).heartbeat()
        await env.sleep(1)
        second = (await _tokens(2))[1]
        with pytest.raises(ActivityNotCurrentError) as retried:
            await env.client.get_async_activity_handle(first).heartbeat()
        await env.client.get_async_activity_handle(second).heartbeat()  # current
        await env.client.get_async_activity_handle(second).complete("in time")
        assert await handle.result() == "in time"
    assert (
        in_backoff.value.reason
        == "the attempt failed or timed out; the next one waits for its retry"
    )
    assert retried.value.reason == "attempt 2 of the activity is the current one"
    assert "activity 1 attempt 1 of workflow 'a-6'" in str(retried.value)


async def test_a_heartbeat_from_outside_hears_that_the_workflow_was_cancelled(
    env: WorkflowEnvironment,
) -> None:
    async with _worker(env):
        handle = await env.client.start_workflow(approval, "T-7", True, 0, id="a-7", task_queue="q")
        [token] = await _tokens(1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        with pytest.raises(ActivityNotCurrentError) as cancelled:
            await env.client.get_async_activity_handle(token).heartbeat()
    assert cancelled.value.reason == "the run is cancelled"


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "not an object"),
        (b'{"workflow_id": "w", "run_id": "r", "seq": 1}', "without 'attempt'"),
        (b'{"workflow_id": "w", "run_id": "r", "seq": "1", "attempt": 1}', "wrong type"),
    ],
)
def test_a_bad_task_token_is_refused_saying_why(token: bytes, says: str) -> None:
    with pytest.raises(InvalidTaskTokenError, match=says):
        TaskToken.decode(token)


async def test_raise_complete_async_outside_an_activity_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not in an activity"):
        activity.raise_complete_async()
