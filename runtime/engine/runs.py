"""`Runs`: every run of one workflow id, which one is current, and how the closed ones ended.

Start dedupe (request id -> run id), outcomes and the continue-as-new chain outlive the
run they belong to, so they live here rather than in a run's `RunState`.
"""

from __future__ import annotations

from runtime.engine.state import RunState
from runtime.errors import not_found_failure
from runtime.messages import WorkflowOutcome, WorkflowStatus
from runtime.payloads import Failure


class Runs:
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.current: RunState | None = None
        self._by_id: dict[str, RunState] = {}
        self._by_start_request: dict[str, str] = {}
        self._outcomes: dict[str, WorkflowOutcome] = {}
        self._continued_as: dict[str, str] = {}

    def open(self, run: RunState) -> None:
        """A new run starts and becomes the current one."""
        self._by_id[run.run_id] = run
        self.current = run
        self._by_start_request[run.started.request_id] = run.run_id
        if run.started.continued_from_run_id:
            self._continued_as[run.started.continued_from_run_id] = run.run_id

    def close(self, run: RunState) -> None:
        """Remember how `run` ended (its status, result and failure are already set)."""
        self._outcomes[run.run_id] = WorkflowOutcome(
            run.run_id, run.status, run.result, run.failure
        )

    def get(self, run_id: str) -> RunState | None:
        return self._by_id.get(run_id)

    def all(self) -> list[RunState]:
        """Every run of the workflow id the history holds, oldest first."""
        return list(self._by_id.values())

    def started_by(self, request_id: str) -> str | None:
        """The run id a start request created, if it was seen."""
        return self._by_start_request.get(request_id)

    def target(self, run_id: str | None, *, open_only: bool = False) -> RunState | None:
        """The run a client request names (None: the current one), if it qualifies."""
        run = self._by_id.get(run_id) if run_id else self.current
        if run is None or (open_only and run.closed):
            return None
        return run

    def final_outcome(self, run_id: str | None, follow: bool) -> WorkflowOutcome | Failure | None:
        """The outcome to answer with; None while running; a Failure if unknown.

        With `follow`, a continue-as-new is not an outcome: the chain is followed to the
        run that actually ended. The next run is recorded right after the
        `WorkflowContinuedAsNew` that closes a run, so a run closed that way whose next run
        is not known yet is still running as far as a waiter can tell.
        """
        rid = run_id or (self.current.run_id if self.current else None)
        if rid is None or rid not in self._by_id:
            return not_found_failure(self.workflow_id, run_id)
        while True:
            outcome = self._outcomes.get(rid)
            if outcome is None:
                return None
            if not follow or outcome.status is not WorkflowStatus.CONTINUED_AS_NEW:
                return outcome
            next_rid = self._continued_as.get(rid)
            if next_rid is None:
                return None
            rid = next_rid
