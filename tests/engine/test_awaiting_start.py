"""`StartWorkflow(await_result=True)`: one inbox message and one reply per executed workflow.

The engine answers such a start like a `GetWorkflowResult` for the run it started: never
with a `StartAccepted`, once with the outcome when the run closes (following
continue-as-new), at once with `RequestFailed` when the id reuse policy refuses it. A
duplicate (the client re-sending the same start) is a re-ask, not a second run.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from runtime import WorkflowAlreadyStartedError, workflow
from runtime.converter import DataConverter
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.engine.transition import Transition
from runtime.events import WorkflowStarted
from runtime.messages import (
    GetWorkflowResult,
    InboxMessage,
    Reply,
    ReplyBody,
    RequestFailed,
    StartWorkflow,
    TimerFiredReport,
    WorkflowOutcome,
    WorkflowStatus,
)
from runtime.testing import WorkflowEnvironment
from workers.worker import Worker

CONVERTER = DataConverter()


@workflow.defn
async def napper(n: int) -> int:
    await workflow.sleep(timedelta(seconds=10))
    return n * 2


@workflow.defn
async def napping_chain(n: int) -> int:
    """Sleeps, then continues as new until `n` reaches 2: three runs, one outcome."""
    await workflow.sleep(timedelta(seconds=10))
    if n < 2:
        workflow.continue_as_new(n + 1)
    return n


def _start(workflow_type: str = "napper", request_id: str = "r1", arg: int = 21) -> StartWorkflow:
    return StartWorkflow(
        "w",
        workflow_type,
        "q",
        CONVERTER.encode([arg]),
        request_id,
        reply_to="c",
        await_result=True,
    )


def _instance() -> WorkflowInstance:
    return WorkflowInstance.restore("w", [], WorkflowRegistry([napper, napping_chain]))


def _fire_timer(instance: WorkflowInstance, started: Transition) -> Transition:
    """Fire the one user timer `started` armed."""
    (timer,) = [t for t in started.timers if t.timer_id.startswith("sleep")]
    fired = TimerFiredReport("w", timer.run_id, timer.timer_id, timer.fire_at_ms)
    return instance.handle(fired, timer.fire_at_ms)


def _bodies(transition: Transition, request_id: str = "r1") -> list[ReplyBody]:
    assert all(r.client_id == "c" for r in transition.replies)
    return [r.body for r in transition.replies if r.request_id == request_id]


def _completed(run_id: str | None, value: int) -> WorkflowOutcome:
    assert run_id is not None
    return WorkflowOutcome(run_id, WorkflowStatus.COMPLETED, CONVERTER.encode_one(value), None)


def test_a_fresh_start_is_answered_once_with_the_outcome_and_never_accepted() -> None:
    instance = _instance()
    started = instance.handle(_start(), 1_000)
    assert isinstance(started.events[0].attributes, WorkflowStarted)
    assert started.replies == []
    assert instance.has_waiters()  # so a host keeps the instance in memory
    closed = _fire_timer(instance, started)
    assert closed.replies == [Reply("c", "r1", "w", _completed(instance.current_run_id, 42))]
    assert not instance.has_waiters()


def test_a_duplicate_while_running_is_a_re_ask_answered_when_the_run_closes() -> None:
    instance = _instance()
    started = instance.handle(_start(), 1_000)
    again = instance.handle(_start(), 2_000)
    assert again.events == [] and again.replies == []
    closed = _fire_timer(instance, started)
    # Re-asking with the same message waits once: one reply, not one per copy.
    assert _bodies(closed) == [_completed(instance.current_run_id, 42)]


def test_a_duplicate_after_the_close_is_answered_at_once() -> None:
    instance = _instance()
    _fire_timer(instance, instance.handle(_start(), 1_000))
    again = instance.handle(_start(), 20_000)
    assert again.events == []
    assert _bodies(again) == [_completed(instance.current_run_id, 42)]


def test_a_waiter_not_asked_for_within_the_lease_is_forgotten() -> None:
    instance = _instance()
    started = instance.handle(_start(), 1_000)
    assert instance.expire_waiters(asked_before_ms=1_000) == 0  # asked at 1,000: kept
    instance.handle(_start(), 5_000)  # the client re-asks
    assert instance.expire_waiters(asked_before_ms=4_000) == 0  # the re-ask renewed it
    assert instance.expire_waiters(asked_before_ms=5_001) == 1
    assert not instance.has_waiters()  # a host may evict the instance now
    assert _fire_timer(instance, started).replies == []  # nobody is told: nobody waits
    # A caller that was still there re-asks, and hears the outcome from the history.
    again = instance.handle(_start(), 30_000)
    assert _bodies(again) == [_completed(instance.current_run_id, 42)]


def test_a_start_refused_by_the_id_reuse_policy_fails_at_once() -> None:
    instance = _instance()
    started = instance.handle(_start(request_id="first"), 1_000)
    refused = instance.handle(_start(request_id="second"), 2_000)
    assert refused.events == []
    (body,) = _bodies(refused, "second")
    assert isinstance(body, RequestFailed)
    assert body.failure.type == "WorkflowAlreadyStartedError"
    closed = _fire_timer(instance, started)
    assert [r.request_id for r in closed.replies] == ["first"]  # the refused one waits not


def test_an_unknown_workflow_type_is_answered_with_its_failure_in_the_same_transition() -> None:
    instance = _instance()
    failed = instance.handle(_start(workflow_type="nope"), 1_000)
    (body,) = _bodies(failed)
    assert isinstance(body, WorkflowOutcome)
    assert body.status is WorkflowStatus.FAILED
    assert body.failure is not None and body.failure.type == "WorkflowTypeNotFound"
    assert not instance.has_waiters()


@pytest.mark.parametrize("await_result", [True, False], ids=["awaiting-start", "result-request"])
def test_continue_as_new_is_followed_to_the_run_that_ends(await_result: bool) -> None:
    instance = _instance()
    start = replace(_start(workflow_type="napping_chain", arg=0), await_result=await_result)
    step = instance.handle(start, 1_000)
    first_run = instance.current_run_id
    assert first_run is not None
    if not await_result:  # the same waiter, asked for with a result request
        assert instance.handle(GetWorkflowResult("w", first_run, "r1", "c"), 1_001).replies == []
    for _ in range(2):
        step = _fire_timer(instance, step)
        assert step.replies == []  # a continue-as-new is not an outcome
    last = _fire_timer(instance, step)
    assert instance.current_run_id != first_run
    assert _bodies(last) == [_completed(instance.current_run_id, 2)]


def test_without_the_flag_a_start_is_accepted_as_before() -> None:
    instance = _instance()
    plain = StartWorkflow("w", "napper", "q", CONVERTER.encode([1]), "r1", reply_to="c")
    started = instance.handle(plain, 1_000)
    assert [type(r.body).__name__ for r in started.replies] == ["StartAccepted"]
    assert not instance.has_waiters()


# --- through the client ---------------------------------------------------------------------


def _record_traffic(env: WorkflowEnvironment) -> tuple[list[InboxMessage], list[Reply]]:
    """Every message the client posts and every reply it is sent, from now on."""
    service, posted, replies = env.service, [], []
    post, on_reply = service.post, service.on_reply

    def recording_post(message: InboxMessage) -> None:
        posted.append(message)
        post(message)

    def recording_reply(reply: Reply) -> None:
        replies.append(reply)
        on_reply(reply)

    service.post = recording_post  # type: ignore[method-assign]
    service.on_reply = recording_reply
    return posted, replies


async def test_execute_workflow_is_one_message_and_one_reply(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[napper]):
        posted, replies = _record_traffic(env)
        assert await env.client.execute_workflow(napper, 4, id="one", task_queue="q") == 8
    assert [type(m) for m in posted] == [StartWorkflow]
    assert not any(isinstance(m, GetWorkflowResult) for m in posted)
    assert [type(r.body) for r in replies] == [WorkflowOutcome]


async def test_execute_workflow_raises_the_refusal_of_its_start(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="q", workflows=[napper]):
        await env.client.start_workflow(napper, 1, id="taken", task_queue="q")
        with pytest.raises(WorkflowAlreadyStartedError):
            await env.client.execute_workflow(napper, 2, id="taken", task_queue="q")
