"""The code side of one workflow run: user code on a deterministic loop, issuing commands.

`WorkflowRun` knows nothing of the history: the instance feeds it resolutions (an activity
completed, a timer fired, a signal arrived), runs it until every coroutine is blocked and
collects the commands it issued, in order. Whether those commands become new events (live)
or are checked against recorded ones (replay) is the instance's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from runtime.converter import DataConverter
from runtime.definitions import HandlerDefinition, WorkflowDefinition
from runtime.engine.commands import Command
from runtime.engine.loop import DeterministicLoop
from runtime.engine.patches import patch_marker
from runtime.epoch import datetime_of
from runtime.errors import (
    ActivityError,
    ChildWorkflowError,
    ContinueAsNewError,
    ReadOnlyContextError,
    exception_from_failure,
    failure_from_exception,
    no_handler_message,
)
from runtime.events import (
    ActivityCancelRequested,
    ActivityScheduled,
    ChildWorkflowCancelRequested,
    ChildWorkflowInitiated,
    ExternalSignalSent,
    ParentRef,
    TimerCancelled,
    TimerStarted,
    UpdateCompleted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
)
from runtime.payloads import Failure, Payload

_log = structlog.get_logger("chronik.workflow")


@dataclass(frozen=True)
class WorkflowInfo:
    """What `workflow.info()` returns."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    start_time: datetime
    first_run_id: str
    continued_from_run_id: str | None
    parent: ParentRef | None
    execution_timeout: timedelta | None
    attempt: int = 1


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    result_type: Any


@dataclass
class _Child:
    workflow_id: str
    started: asyncio.Future[str]
    result: asyncio.Future[Any]
    result_type: Any
    done: bool = False


class WorkflowRun:
    """One run's code. Created on `WorkflowStarted`, dropped when the run closes."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        info: WorkflowInfo,
        converter: DataConverter,
        patch_lookup: weakref.WeakMethod[Callable[[str], bool]],
    ) -> None:
        self.definition = definition
        self.info = info
        self.converter = converter
        self.now_ms = int(info.start_time.timestamp() * 1000)
        self.replaying = False
        self._random: random.Random | None = None
        # AbstractEventLoop's I/O methods stay abstract on purpose: workflow code may not do I/O.
        self.loop = DeterministicLoop(self)  # type: ignore[abstract]
        self.commands: list[Command] = []
        self.closed = False
        self.unhandled: list[dict[str, Any]] = []
        self._patch_lookup = patch_lookup
        self._patches: dict[str, bool] = {}
        self._seq = {"activity": 0, "timer": 0, "child": 0, "marker": 0, "signal": 0}
        self._activities: dict[int, _Pending] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_seq: dict[int, int] = {}
        self._children: dict[int, _Child] = {}
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []
        self._instance: Any = None
        self._main: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        #: The command that ends the run, held until the step that produced it has run out.
        self._closing: Command | None = None
        #: What read-only handler runs now (a query, an update validator), if any.
        self._reading: str | None = None

    @property
    def random(self) -> random.Random:
        """Seeded from the run id on first use: most runs never draw a number, and seeding
        a Mersenne Twister on every start and replay was 1 % of the workflow worker."""
        self._check_writable("draw from workflow.random() or workflow.uuid4()")
        if self._random is None:
            self._random = random.Random(uuid.UUID(self.info.run_id).int)
        return self._random

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, payloads: Sequence[Payload]) -> None:
        defn = self.definition
        construction_failed: list[BaseException] = []

        async def main() -> Any:
            if construction_failed:  # the constructor raised: the run fails with that
                raise construction_failed[0]
            # Decoded in the run's own task: arguments the workflow's types refuse fail the
            # workflow with the reason, as missing ones do (outside, the error escaped the
            # engine, the start was dead-lettered and its caller waited forever).
            args = self.converter.decode(payloads, defn.arg_types)
            if defn.cls is not None:
                return await defn.run_fn(self._instance, *args)
            return await defn.run_fn(*args)

        def start_main() -> None:
            self._main = self.loop.create_task(main(), name=f"workflow:{self.info.workflow_id}")
            self._main.add_done_callback(self._on_main_done)

        def construct() -> None:
            if defn.cls is not None:
                try:
                    self._instance = defn.cls()
                except Exception as error:
                    construction_failed.append(error)
            # One turn later: the handlers of signals delivered with the start (queued
            # meanwhile: signal-with-start) run before the run method, as in Temporal.
            self.loop.call_soon(start_main)

        # Constructing the instance runs user code: do it on the loop, like everything else.
        self.loop.call_soon(construct)

    def _on_main_done(self, task: asyncio.Task[Any]) -> None:
        if self.closed or self._closing is not None:
            return
        if task.cancelled():
            failure = Failure("workflow cancelled", kind="cancelled")
            self._close(
                WorkflowCancelled(failure) if self._cancel_requested else WorkflowFailed(failure)
            )
            return
        exc = task.exception()
        try:
            if exc is None:
                self._close(WorkflowCompleted(self.converter.encode_one(task.result())))
            elif isinstance(exc, ContinueAsNewError):
                self._close(
                    WorkflowContinuedAsNew(
                        new_run_id="",
                        workflow_type=exc.workflow_type or self.info.workflow_type,
                        task_queue=exc.task_queue or self.info.task_queue,
                        input=self.converter.encode(exc.args),
                    )
                )
            elif isinstance(exc, asyncio.CancelledError) and self._cancel_requested:
                self._close(WorkflowCancelled(Failure("workflow cancelled", kind="cancelled")))
            else:
                self._close(WorkflowFailed(failure_from_exception(exc, self.converter.encode)))
        except Exception as unencodable:  # a result, argument or detail the converter refuses
            # Raised here, in a loop callback, it was only logged, and the run never closed.
            self._close(WorkflowFailed(failure_from_exception(unencodable)))

    def _close(self, command: Command) -> None:
        """The run ends with ``command`` once this step has run to its end: update handlers
        that finish in the same step (the run completing is what they waited for) are
        answered first, instead of being failed as cut short."""
        if self._closing is None and not self.closed:
            self._closing = command

    def destroy(self) -> None:
        """Drop every coroutine without running its `finally` blocks on a dead history."""
        self.closed = True
        self.loop.close()

    def run_until_blocked(self) -> None:
        """Run ready callbacks, re-check `wait_condition`s, until nothing can move; then
        close the run if it ended in this step."""
        while True:
            self.loop.run_ready()
            if not self._check_conditions():
                break
        if self._closing is not None and not self.closed:
            self.closed = True
            self.commands.append(self._closing)

    def _check_conditions(self) -> bool:
        resolved = False
        for fn, fut in list(self._conditions):
            if fut.done():
                self._conditions.remove((fn, fut))
                continue
            try:
                ok = self.loop.run_in_context(fn)
            except Exception as exc:
                fut.set_exception(exc)
                ok = True
            else:
                if ok:
                    fut.set_result(True)
            if ok:
                self._conditions.remove((fn, fut))
                resolved = True
        return resolved

    def take_commands(self) -> list[Command]:
        commands, self.commands = self.commands, []
        return commands

    # --- resolutions from the instance ---------------------------------------------------

    def resolve_activity(
        self, seq: int, result: Payload | None, error: BaseException | None
    ) -> None:
        pending = self._activities.pop(seq, None)
        if pending is None or pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
            return
        try:  # a result the workflow's type hint refuses is the awaiting code's to handle
            value = self.converter.decode_one(result, pending.result_type)
        except Exception as undecodable:
            pending.future.set_exception(undecodable)
        else:
            pending.future.set_result(value)

    def fire_timer(self, seq: int) -> None:
        handle = self._timers.pop(seq, None)
        if handle is not None:
            self._timer_seq.pop(id(handle), None)
            self.loop.fire(handle)

    def child_started(self, seq: int, run_id: str) -> None:
        child = self._children.get(seq)
        if child is not None and not child.started.done():
            child.started.set_result(run_id)

    def child_closed(self, seq: int, result: Payload | None, failure: Failure | None) -> None:
        child = self._children.get(seq)
        if child is None:
            return
        child.done = True
        error = None
        if failure is not None:
            error = ChildWorkflowError(
                f"child workflow {child.workflow_id!r} did not complete",
                workflow_id=child.workflow_id,
                cause=exception_from_failure(failure, self.converter.decode),
            )
            if not child.started.done():
                child.started.set_exception(error)
                child.result.cancel()
                return
        if child.result.done():
            return
        if error is not None:
            child.result.set_exception(error)
            return
        try:
            value = self.converter.decode_one(result, child.result_type)
        except Exception as undecodable:
            child.result.set_exception(undecodable)
        else:
            child.result.set_result(value)

    def deliver_signal(self, name: str, payloads: Sequence[Payload]) -> None:
        handler = self.definition.signals.get(name)
        if handler is None:
            # Only a signal recorded before this code (which has no such handler) was
            # deployed gets here: a new one without a handler is refused, not recorded.
            _log.warning(
                "recorded signal has no handler in this code: dropped",
                signal=name,
                **self._log_ctx(),
            )
            return
        self.loop.call_soon(self._invoke_handler, handler, payloads, None)

    def start_update(self, update_id: str, name: str, payloads: Sequence[Payload]) -> bool:
        """Run the update's handler; False when this code has none (replaying a history
        that accepted an update a later deploy removed)."""
        handler = self.definition.updates.get(name)
        if handler is None:
            return False
        self.loop.call_soon(self._invoke_handler, handler, payloads, update_id)
        return True

    def _invoke_handler(
        self, handler: HandlerDefinition, payloads: Sequence[Payload], update_id: str | None
    ) -> None:
        if update_id is None:  # a signal that does not decode is dropped, with a warning
            args = self.converter.decode(payloads, handler.arg_types)

        async def run() -> Any:
            # An update's arguments decode in its task: a failure completes the update.
            decoded = (
                args if update_id is None else self.converter.decode(payloads, handler.arg_types)
            )
            value = handler.fn(self._instance, *decoded)
            return (await value) if handler.is_async else value

        task = self.loop.create_task(run())
        task.add_done_callback(lambda t: self._on_handler_done(t, update_id))

    def _on_handler_done(self, task: asyncio.Task[Any], update_id: str | None) -> None:
        exc = None if task.cancelled() else task.exception()
        if update_id is not None:
            if self.closed:
                return
            try:
                if task.cancelled() or exc is not None:
                    failure = failure_from_exception(
                        exc or asyncio.CancelledError(), self.converter.encode
                    )
                    self.commands.append(UpdateCompleted(update_id, None, failure))
                else:
                    payload = self.converter.encode_one(task.result())
                    self.commands.append(UpdateCompleted(update_id, payload, None))
            except Exception as unencodable:  # its result or details do not convert
                failure = failure_from_exception(unencodable)
                self.commands.append(UpdateCompleted(update_id, None, failure))
        elif exc is not None and not self.closed:
            # A signal handler that raises fails the workflow, as an exception in run would.
            self._close(WorkflowFailed(failure_from_exception(exc, self.converter.encode)))

    def validate_update(self, name: str, payloads: Sequence[Payload]) -> Failure | None:
        handler = self.definition.updates.get(name)
        if handler is None:
            known = self.definition.updates
            return Failure(no_handler_message("update", self.info.workflow_type, name, known))
        validator = handler.validator
        try:  # arguments that do not decode are refused like a validator's rejection
            args = self.converter.decode(payloads, handler.arg_types)
            if validator is not None:
                with self._read_only("an update validator"):
                    self.loop.run_in_context(lambda: validator(self._instance, *args))
        except Exception as exc:
            return failure_from_exception(exc, self.converter.encode, with_stack=False)
        return None

    def query(self, name: str, payloads: Sequence[Payload]) -> Payload | None:
        handler = self.definition.queries.get(name)
        if handler is None:
            known = self.definition.queries
            raise ValueError(no_handler_message("query", self.info.workflow_type, name, known))
        args = self.converter.decode(payloads, handler.arg_types)
        with self._read_only("a query"):
            value = self.loop.run_in_context(lambda: handler.fn(self._instance, *args))
        return self.converter.encode_one(value)

    @contextlib.contextmanager
    def _read_only(self, what: str) -> Iterator[None]:
        """While a query or an update validator runs: it reads the workflow, and nothing
        it does may change it — no command, no draw from the seeded random stream, which
        the run's later commands would then no longer match on replay."""
        self._reading = what
        try:
            yield
        finally:
            self._reading = None

    def _check_writable(self, action: str) -> None:
        if self._reading is not None:
            raise ReadOnlyContextError(
                f"{self._reading} may not {action}: it must not change the workflow"
            )

    def request_cancel(self) -> None:
        self._cancel_requested = True
        if self._main is not None and not self._main.done():
            self._main.cancel()

    # --- the workflow API (called from `runtime.workflow`) ---------------------------------

    def _next(self, kind: str) -> int:
        self._check_writable(f"issue a command (a new {kind})")
        self._seq[kind] += 1
        return self._seq[kind]

    def schedule_activity(
        self, event: Callable[[int], ActivityScheduled], result_type: Any
    ) -> asyncio.Future[Any]:
        seq = self._next("activity")
        scheduled = event(seq)
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._activities[seq] = _Pending(fut, result_type)
        self.commands.append(scheduled)

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() and seq in self._activities and not self.closed:
                del self._activities[seq]
                self.commands.append(ActivityCancelRequested(seq))

        fut.add_done_callback(on_done)
        return fut

    def activity_error(self, seq: int, activity_type: str, failure: Failure) -> ActivityError:
        return ActivityError(
            f"activity {activity_type!r} (seq {seq}) failed",
            activity_type=activity_type,
            seq=seq,
            cause=exception_from_failure(failure, self.converter.decode),
        )

    def start_timer(self, handle: asyncio.TimerHandle, delay_ms: int) -> None:
        if self.closed:
            return
        seq = self._next("timer")
        self._timers[seq] = handle
        self._timer_seq[id(handle)] = seq
        self.commands.append(TimerStarted(seq, delay_ms, self.now_ms + delay_ms))

    def cancel_timer(self, handle: asyncio.TimerHandle) -> None:
        seq = self._timer_seq.pop(id(handle), None)
        if seq is not None and not self.closed:
            del self._timers[seq]
            self.commands.append(TimerCancelled(seq))

    def report_exception(self, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("Task was destroyed"):
            return  # an evicted or closed run's coroutines being collected: expected
        self.unhandled.append(context)
        if not self.replaying:
            _log.warning(
                "unhandled error in workflow task",
                message=context.get("message"),
                **self._log_ctx(),
            )

    def wait_condition(self, fn: Callable[[], bool]) -> asyncio.Future[bool]:
        self._check_writable("wait")
        fut: asyncio.Future[bool] = self.loop.create_future()
        self._conditions.append((fn, fut))
        return fut

    def start_child(
        self, event: Callable[[int], ChildWorkflowInitiated], result_type: Any
    ) -> _Child:
        seq = self._next("child")
        initiated = event(seq)
        child = _Child(
            initiated.workflow_id, self.loop.create_future(), self.loop.create_future(), result_type
        )
        self._children[seq] = child
        self.commands.append(initiated)

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() and not child.done and not self.closed:
                child.done = True
                self.commands.append(ChildWorkflowCancelRequested(seq))

        # Cancelled while it waits for the start, or for the result: either way the child
        # is to be cancelled (the request follows its start on the child's inbox key).
        child.started.add_done_callback(on_done)
        child.result.add_done_callback(on_done)
        return child

    def signal_external(self, workflow_id: str, name: str, args: Sequence[Any]) -> None:
        seq = self._next("signal")
        self.commands.append(
            ExternalSignalSent(seq, workflow_id, name, self.converter.encode(args))
        )

    def patched(self, patch_id: str) -> bool:
        return self._patch(patch_id, deprecated=False)

    def deprecate_patch(self, patch_id: str) -> None:
        """The new branch is the only one left; the marker still goes where `patched`
        put it, so the histories either call recorded replay with this code, and so that
        a worker still running the `patched()` code reads this run as patched."""
        self._patch(patch_id, deprecated=True)

    def _patch(self, patch_id: str, *, deprecated: bool) -> bool:
        """Decide once per run: live, the new branch, recorded as a marker; on replay,
        whether the history recorded that marker in this step (then it is issued again,
        to be matched). The answer is memoized: later calls agree with the first."""
        if patch_id not in self._patches:
            self._check_writable(
                "call workflow.patched() or workflow.deprecate_patch() for a new patch id"
            )
            lookup = self._patch_lookup()
            assert lookup is not None  # the execution drives this code, so it is alive
            use_new = lookup(patch_id)
            self._patches[patch_id] = use_new
            if use_new:
                seq = self._next("marker")
                self.commands.append(patch_marker(seq, patch_id, deprecated=deprecated))
        return self._patches[patch_id]

    def now(self) -> datetime:
        return datetime_of(self.now_ms)

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.random.getrandbits(128), version=4)

    def _log_ctx(self) -> dict[str, Any]:
        return {"workflow_id": self.info.workflow_id, "run_id": self.info.run_id}


def current_run() -> WorkflowRun:
    """The run whose code is executing, or an error outside workflow code."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, DeterministicLoop) or not isinstance(loop.host, WorkflowRun):
        raise RuntimeError("not in workflow code: this function is only usable inside a workflow")
    return loop.host


def awaitable(fut: asyncio.Future[Any]) -> Awaitable[Any]:
    return fut
