"""`Execution`: the history of one workflow id and the one path every event takes.

An event, new or recorded, is appended to the history, applied to the run state, and, if
it may unblock code (WAKE), followed by running the code until it blocks. The commands
the code issues become new events live, or are matched against the recorded ones on
replay. Sharing this path is what makes a restored instance the same as a live one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta

from runtime.engine.commands import Command
from runtime.engine.effects import Effects
from runtime.engine.ids import EXECUTION_TIMEOUT_TIMER, derive_run_id
from runtime.engine.registry import WorkflowRegistry
from runtime.engine.replay import RecordedEvents, never_ran, start_signal_follows
from runtime.engine.run_events import apply_to_run
from runtime.engine.runs import Runs
from runtime.engine.state import EventClass, RunState, classify
from runtime.engine.waiters import Waiters
from runtime.engine.workflow_run import WorkflowInfo, WorkflowRun
from runtime.epoch import datetime_of
from runtime.errors import (
    NonDeterminismError,
    WorkflowTypeNotRegisteredError,
    failure_from_exception,
)
from runtime.events import (
    CLOSING_EVENTS,
    EventAttributes,
    HistoryEvent,
    UpdateCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    WorkflowTaskFailed,
)
from runtime.messages import ChildStartedReport, StatusRecord

#: A set, not `HistoryEvent.closes_run`: `_apply` runs for every event, keep it O(1).
_CLOSING_TYPES = frozenset(CLOSING_EVENTS)


class Execution:
    """Every run of one workflow id, its history, and the code of the current run."""

    def __init__(self, workflow_id: str, registry: WorkflowRegistry) -> None:
        self.workflow_id = workflow_id
        self.registry = registry
        self.history: list[HistoryEvent] = []
        self.runs = Runs(workflow_id)
        self.waiters = Waiters()
        self.fx = Effects(workflow_id)
        #: The time of the event being processed: the message's live, the event's on replay.
        self.now_ms = 0
        #: Every non-determinism found while restoring.
        self.task_failures: list[NonDeterminismError] = []
        #: The events being replayed; None while live. (It holds `_consume`: keeping one
        #: while live would tie this object into a reference cycle, docs/engine.md "Memory".)
        self._recorded: RecordedEvents | None = None
        self._code_enabled = True

    def next_event_id(self) -> int:
        return self.history[-1].event_id + 1 if self.history else 1

    def status_record(self, run: RunState) -> StatusRecord:
        return StatusRecord(
            workflow_id=self.workflow_id,
            run_id=run.run_id,
            workflow_type=run.workflow_type,
            task_queue=run.task_queue,
            status=run.status,
            start_time_ms=run.start_time_ms,
            close_time_ms=run.close_time_ms,
            history_length=self.next_event_id() - 1,
            failure=run.failure,
            task_failure=(
                failure_from_exception(run.stuck, with_stack=False)
                if run.stuck is not None and not run.closed
                else None
            ),
        )

    # --- replay -------------------------------------------------------------------------------

    def replay(self, events: Sequence[HistoryEvent], all_runs: bool) -> None:
        """Apply recorded events; only the newest run's code runs unless `all_runs`."""
        last_start = max(
            (i for i, e in enumerate(events) if isinstance(e.attributes, WorkflowStarted)),
            default=0,
        )
        recorded = self._recorded = RecordedEvents(events, self._consume, self.task_failures)
        try:
            while (event := recorded.next()) is not None:
                index = recorded.consumed - 1
                self._code_enabled = all_runs or index >= last_start
                self.now_ms = event.timestamp_ms
                self._replay_event(event)
            run = self.runs.current
            if run is not None and run.code is not None:
                recorded.check_caught_up(run, None)
        finally:
            self._recorded = None
            self._code_enabled = True
        self._check_type_known()

    def _check_type_known(self) -> None:
        """A restored open run whose type this code lacks (renamed, or dropped from the
        worker) fails its task, as for non-determinism, and code that has the type resumes
        it; else it would sit there, silent."""
        run = self.runs.current
        if run is None or run.closed or run.code is not None or run.stuck is not None:
            return
        if self.registry.get(run.workflow_type) is None:
            run.stuck = WorkflowTypeNotRegisteredError(self.next_event_id() - 1, run.workflow_type)
            self._note_stuck(run)

    def _replay_event(self, event: HistoryEvent) -> None:
        recorded = self._recorded
        assert recorded is not None  # replaying
        kind = classify(event.attributes)
        run = self.runs.current
        if kind is not EventClass.BOOKKEEPING and run is not None and run.code is not None:
            if kind is EventClass.COMMAND:
                recorded.check_recorded(run, event)
            else:
                recorded.check_caught_up(run, event)
        self._consume(event)
        if kind is EventClass.WAKE and not start_signal_follows(event, recorded.peek()):
            self._drive()

    def _consume(self, event: HistoryEvent) -> None:
        self.history.append(event)
        self._apply(event)

    # --- live -----------------------------------------------------------------------------------

    def record(
        self, attrs: EventAttributes, run_id: str | None = None, *, drive: bool = True
    ) -> HistoryEvent:
        """Live: append a new event (of `run_id`, else the current run) and apply it; then
        run the code if the event may unblock it, unless ``drive`` is False: the caller
        records the next event first (a signal-with-start's signal, before any code)."""
        transition = self.fx.transition
        assert transition is not None
        rid = run_id or (self.runs.current.run_id if self.runs.current else "")
        event = HistoryEvent(self.workflow_id, rid, self.next_event_id(), self.now_ms, attrs)
        transition.events.append(event)
        self._consume(event)
        if drive and classify(attrs) is EventClass.WAKE:
            self._drive()
        return event

    def catch_up(self) -> None:
        """Before a message: record what replay left owed (a task failure, queued commands)."""
        run = self.runs.current
        if run is None or run.closed:
            return
        if run.reported_failure is not None:
            self._report_task_state(run)
        if run.stuck is not None and not run.stuck_recorded:
            failure = failure_from_exception(run.stuck, with_stack=False)
            self.record(WorkflowTaskFailed(failure))
        if run.pending_commands and run.code is not None:
            pending, run.pending_commands = run.pending_commands, []
            for command in pending:
                if not run.closed:
                    self._record_command(run, command)
            self._drive()

    # --- running code ---------------------------------------------------------------------------

    def _drive(self) -> None:
        """Run the current run's code until blocked; turn its commands into events."""
        run = self.runs.current
        while run is not None and run is self.runs.current and run.code is not None:
            if run.closed:
                return
            code = run.code
            code.replaying = not self.fx.live
            try:
                code.run_until_blocked()
            except Exception as exc:
                last_id = self.next_event_id() - 1
                run.detach_code(NonDeterminismError(last_id, "a runnable task", repr(exc)))
                self._note_stuck(run)
                return
            commands = code.take_commands()
            if not commands:
                return
            for command in commands:
                if run.closed or run.code is None:
                    break
                if self.fx.live:
                    self._record_command(run, command)
                else:
                    assert self._recorded is not None  # code runs only live or replaying
                    self._recorded.match(run, command)

    def _record_command(self, run: RunState, command: Command) -> None:
        if not isinstance(command, WorkflowContinuedAsNew):
            self.record(command)
            return
        new_run_id = derive_run_id(self.workflow_id, "continue-as-new", self.next_event_id())
        self.record(replace(command, new_run_id=new_run_id))
        old = run.started
        self.record(
            WorkflowStarted(
                workflow_type=command.workflow_type,
                task_queue=command.task_queue,
                input=command.input,
                request_id=f"continue-as-new:{new_run_id}",
                execution_timeout_ms=old.execution_timeout_ms,
                run_timeout_ms=old.run_timeout_ms,
                parent=old.parent,
                continued_from_run_id=run.run_id,
                first_run_id=old.first_run_id or run.run_id,
            ),
            run_id=new_run_id,
        )

    # --- applying events (live and replay) ------------------------------------------------------

    def _apply(self, event: HistoryEvent) -> None:
        attrs = event.attributes
        if isinstance(attrs, WorkflowStarted):
            self._open_run(event, attrs)
            return
        run = self.runs.get(event.run_id)
        if run is None:
            return
        apply_to_run(self.fx, run, event)
        self._note_stuck(run)
        if run.reported_failure is not None and classify(attrs) is EventClass.COMMAND:
            run.reported_failure = None  # the code went on: a status said so (`catch_up`)
        if type(attrs) in _CLOSING_TYPES:
            self.runs.close(run)
            self.fx.status(self.status_record(run))
            self.waiters.fail_updates(self.fx, run.run_id, run.status)
            self.waiters.answer_results(self.fx, self.runs)
        elif isinstance(attrs, UpdateCompleted):
            self.waiters.answer_update(self.fx, attrs)
        elif isinstance(attrs, WorkflowTaskFailed):
            run.reported_failure = attrs.failure.message
            self.fx.status(self.status_record(run))

    def _report_task_state(self, run: RunState) -> None:
        """A status record when the task no longer fails as the last one said: fixed code
        follows the history, or another deploy fails it for another reason."""
        now = failure_from_exception(run.stuck, with_stack=False).message if run.stuck else None
        if now != run.reported_failure:
            run.reported_failure = now
            self.fx.status(self.status_record(run))

    def _open_run(self, event: HistoryEvent, attrs: WorkflowStarted) -> None:
        run = RunState(event.run_id, attrs, event.timestamp_ms)
        if not attrs.first_run_id:
            run.started = replace(attrs, first_run_id=event.run_id)
        self.runs.open(run)
        if attrs.execution_timeout_ms:
            fire_at = event.timestamp_ms + attrs.execution_timeout_ms
            self.fx.arm(run, EXECUTION_TIMEOUT_TIMER, fire_at)
        self.fx.status(self.status_record(run))
        if attrs.parent is not None and not attrs.continued_from_run_id:
            p = attrs.parent
            self.fx.send(
                ChildStartedReport(p.workflow_id, p.run_id, p.seq, self.workflow_id, run.run_id)
            )
        # On replay, a start failed for want of its type stays without code.
        recorded = self._recorded
        if self._code_enabled and not (recorded is not None and never_ran(event, recorded.peek())):
            self._start_code(run, event.timestamp_ms)

    def _note_stuck(self, run: RunState) -> None:
        """A restore reports every run its code could not follow (`task_failures`)."""
        if run.stuck is not None and not self.fx.live and run.stuck not in self.task_failures:
            self.task_failures.append(run.stuck)

    def _start_code(self, run: RunState, start_ms: int) -> None:
        attrs = run.started
        definition = self.registry.get(attrs.workflow_type)
        if definition is None:
            return
        timeout_ms = attrs.execution_timeout_ms
        info = WorkflowInfo(
            workflow_id=self.workflow_id,
            run_id=run.run_id,
            workflow_type=attrs.workflow_type,
            task_queue=attrs.task_queue,
            start_time=datetime_of(start_ms),
            first_run_id=attrs.first_run_id,
            continued_from_run_id=attrs.continued_from_run_id,
            parent=attrs.parent,
            execution_timeout=timedelta(milliseconds=timeout_ms) if timeout_ms else None,
        )
        # The code asks back through a weak method: it must not keep its owner alive.
        patched: weakref.WeakMethod[Callable[[str], bool]] = weakref.WeakMethod(self._patched)
        run.code = WorkflowRun(definition, info, self.registry.converter, patched)
        run.code.replaying = not self.fx.live
        run.code.start(attrs.input)

    def _patched(self, patch_id: str) -> bool:
        """`workflow.patched`/`deprecate_patch`: always True live; on replay, True if the
        history says so."""
        recorded = self._recorded
        return self.fx.live or (recorded is not None and recorded.has_patch_marker(patch_id))
