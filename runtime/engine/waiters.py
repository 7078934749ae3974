"""`Waiters`: callers answered later, when a run closes or an update completes.

They are the only state of an instance not derived from its history: a host must not evict
an instance that has some (`WorkflowInstance.is_idle`), and after a crash callers re-ask.
"""

from __future__ import annotations

from runtime.engine.effects import Effects
from runtime.engine.runs import Runs
from runtime.events import UpdateCompleted
from runtime.messages import GetWorkflowResult, UpdateOutcome, WorkflowOutcome, WorkflowStatus
from runtime.payloads import Failure


class Waiters:
    def __init__(self) -> None:
        #: An ordered set: a client re-asks by sending the same request again, and one
        #: waiting copy is enough (else a long wait would pile up one reply per re-ask).
        self._results: dict[GetWorkflowResult, None] = {}
        self._updates: dict[str, list[tuple[str, str]]] = {}

    def any(self) -> bool:
        return bool(self._results) or any(self._updates.values())

    def await_result(self, request: GetWorkflowResult) -> None:
        self._results[request] = None

    def await_update(self, update_id: str, reply_to: str, request_id: str) -> None:
        callers = self._updates.setdefault(update_id, [])
        if (reply_to, request_id) not in callers:  # a re-ask: one answer is enough
            callers.append((reply_to, request_id))

    def answer_update(self, fx: Effects, done: UpdateCompleted) -> None:
        outcome = UpdateOutcome(done.update_id, done.result, done.failure)
        for reply_to, request_id in self._updates.pop(done.update_id, []):
            fx.reply(reply_to, request_id, outcome)

    def fail_updates(self, fx: Effects, run_id: str, status: WorkflowStatus) -> None:
        """The run closed with updates still running: their handlers will never complete
        (no `UpdateCompleted` will come), so their callers hear that now, not after a
        timeout — and the instance, free of waiters, may be evicted and collected."""
        for update_id, callers in self._updates.items():
            failure = Failure(
                f"the run {run_id} closed ({status.value}) before update {update_id!r} completed",
                type="UpdateNotCompleted",
                non_retryable=True,
            )
            for reply_to, request_id in callers:
                fx.reply(reply_to, request_id, UpdateOutcome(update_id, None, failure))
        self._updates.clear()

    def answer_results(self, fx: Effects, runs: Runs) -> None:
        """Answer every result request a closed run settles; keep the rest waiting."""
        still: dict[GetWorkflowResult, None] = {}
        for waiter in self._results:
            outcome = runs.final_outcome(waiter.run_id, waiter.follow_runs)
            if outcome is None:
                still[waiter] = None
            elif isinstance(outcome, WorkflowOutcome):
                fx.reply(waiter.reply_to, waiter.request_id, outcome)
        self._results = still
