"""`WorkflowInstance`: all runs of one workflow id, driven one inbox message at a time.

`handle(message, now_ms)` decides which events the message implies (`inbox`), records
them, which applies them (`run_events`) and resumes the workflow code (`execution`), and
returns the `Transition` the effects were collected into (`effects`). `restore(history)`
sends recorded events down the very same path, checking the commands the code issues
against the recorded ones (`replay`). Only the side effects are live-only.

Cost per message is independent of history length: a live instance keeps its coroutine and
state machines; replay happens only on restore.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.engine.execution import Execution
from runtime.engine.ids import activity_timer_id, derive_run_id
from runtime.engine.inbox import handle_message
from runtime.engine.registry import WorkflowRegistry
from runtime.engine.transition import Transition
from runtime.errors import NonDeterminismError
from runtime.events import HistoryEvent
from runtime.messages import InboxMessage, StatusRecord

__all__ = ["WorkflowInstance", "activity_timer_id", "derive_run_id"]


class WorkflowInstance:
    """Every run of one workflow id. Not thread-safe; one host task drives it."""

    def __init__(self, workflow_id: str, registry: WorkflowRegistry) -> None:
        self.workflow_id = workflow_id
        self.registry = registry
        self._execution = Execution(workflow_id, registry)
        #: Every non-determinism found while restoring (the Replayer reports them).
        self.task_failures: list[NonDeterminismError] = self._execution.task_failures

    @classmethod
    def restore(
        cls,
        workflow_id: str,
        history: Sequence[HistoryEvent],
        registry: WorkflowRegistry,
        *,
        replay_all_runs: bool = False,
    ) -> WorkflowInstance:
        """Rebuild an instance by replaying `history` (empty: no run yet).

        Only the newest run's code is replayed unless `replay_all_runs`; older runs are
        closed and need only their bookkeeping.
        """
        instance = cls(workflow_id, registry)
        instance._execution.replay(history, replay_all_runs)
        return instance

    def adopt_waiters(self, other: WorkflowInstance) -> None:
        """Take over the callers ``other`` (of the same id) holds: a host that rebuilds an
        instance from history, to undo a transition it could not write, keeps them waiting."""
        self._execution.waiters = other._execution.waiters

    @property
    def history(self) -> Sequence[HistoryEvent]:
        return self._execution.history

    def workflow_type_of(self, run_id: str) -> str | None:
        """The type run ``run_id`` runs: a run continued as new may have been another
        type than the run it started, so the current run's type does not name it."""
        run = self._execution.runs.get(run_id)
        return run.workflow_type if run else None

    @property
    def current_run_id(self) -> str | None:
        run = self._execution.runs.current
        return run.run_id if run else None

    def status(self) -> StatusRecord | None:
        run = self._execution.runs.current
        return self._execution.status_record(run) if run else None

    def is_closed(self) -> bool:
        """No run is open: only a new message (a start, a request) makes this id do anything."""
        run = self._execution.runs.current
        return run is None or run.closed

    def holds_timer(self, timer_id: str) -> bool:
        """Whether the current run has a timer armed under ``timer_id``.

        Timer ids repeat across the runs of one workflow id (each run's first sleep is
        ``sleep:1``), and a deadline may be moved to a later time under its id: a host that
        clears a fired timer's key asks this first, or it would delete the timer a later run
        or a later deadline set on that key.
        """
        run = self._execution.runs.current
        return run is not None and timer_id in run.deadlines

    def is_idle(self) -> bool:
        """True when no in-memory waiter would be lost by evicting this instance."""
        return not self.has_waiters()

    def has_waiters(self) -> bool:
        return self._execution.waiters.any()

    def expire_waiters(self, asked_before_ms: int) -> int:
        """Forget the callers that have not asked since ``asked_before_ms`` (see
        `runtime.engine.waiters`); return how many."""
        return self._execution.waiters.expire(asked_before_ms)

    def handle(self, message: InboxMessage, now_ms: int) -> Transition:
        """Apply one inbox message; deterministic given the history, message and `now_ms`."""
        execution = self._execution
        transition = execution.fx.begin()
        execution.now_ms = now_ms
        try:
            execution.catch_up()
            handle_message(execution, message)
            return transition
        finally:
            execution.fx.end()
