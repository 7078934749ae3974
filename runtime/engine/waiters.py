"""`Waiters`: callers answered later, when a run closes or an update completes.

They are the only state of an instance not derived from its history: a host must not evict
an instance that has some (`WorkflowInstance.is_idle`), and after a crash callers re-ask.

A waiter is held on a lease: each ask (the first, and every re-ask of the same request)
notes when it came, and the host drops waiters not asked for since some time
(`expire`). A caller that went away — a client process that died, a `result(timeout=...)`
that gave up — would otherwise pin its instance in memory, past the host's cache bound,
until the run closes, which may be in a month. A caller still there re-asks (ours do every
10 s), and a re-ask after a run closed is answered from history: an expired waiter costs a
caller at most one re-ask interval, never its answer.
"""

from __future__ import annotations

from runtime.engine.effects import Effects
from runtime.engine.runs import Runs
from runtime.events import UpdateCompleted
from runtime.messages import GetWorkflowResult, UpdateOutcome, WorkflowOutcome, WorkflowStatus
from runtime.payloads import Failure


class Waiters:
    def __init__(self) -> None:
        #: Each request once, with when it was last asked: a client re-asks by sending the
        #: same request again, and one waiting copy is enough (else a long wait would pile
        #: up one reply per re-ask).
        self._results: dict[GetWorkflowResult, int] = {}
        #: Per update id: (reply_to, request_id) -> when last asked.
        self._updates: dict[str, dict[tuple[str, str], int]] = {}

    def any(self) -> bool:
        return bool(self._results) or any(self._updates.values())

    def await_result(self, request: GetWorkflowResult, now_ms: int) -> None:
        self._results[request] = now_ms

    def await_update(self, update_id: str, reply_to: str, request_id: str, now_ms: int) -> None:
        self._updates.setdefault(update_id, {})[(reply_to, request_id)] = now_ms

    def expire(self, asked_before_ms: int) -> int:
        """Drop the waiters last asked for before ``asked_before_ms``; return how many."""
        before = len(self._results)
        self._results = {r: at for r, at in self._results.items() if at >= asked_before_ms}
        dropped = before - len(self._results)
        for update_id, callers in list(self._updates.items()):
            kept = {caller: at for caller, at in callers.items() if at >= asked_before_ms}
            dropped += len(callers) - len(kept)
            if kept:
                self._updates[update_id] = kept
            else:
                del self._updates[update_id]
        return dropped

    def answer_update(self, fx: Effects, done: UpdateCompleted) -> None:
        outcome = UpdateOutcome(done.update_id, done.result, done.failure)
        for reply_to, request_id in self._updates.pop(done.update_id, {}):
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
        still: dict[GetWorkflowResult, int] = {}
        for waiter, asked_at in self._results.items():
            outcome = runs.final_outcome(waiter.run_id, waiter.follow_runs)
            if outcome is None:
                still[waiter] = asked_at
            elif isinstance(outcome, WorkflowOutcome):
                fx.reply(waiter.reply_to, waiter.request_id, outcome)
        self._results = still
