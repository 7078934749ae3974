"""`RecordedEvents`: a pass over a recorded history, checking the code against it.

On replay the code issues its commands again. Each must equal the next recorded COMMAND
event by kind and identity; bookkeeping events recorded before it (engine decisions the
code never saw) are consumed on the way. A disagreement detaches the code from the run
(`NonDeterminismError`), which fails the workflow *task*, not the workflow.

After a recorded `WorkflowTaskFailed` replay is lenient for a while: the stuck run went on
recording wakes without code, so commands the fixed code issues there are queued (owed)
and recorded at the next message, in one block. Leniency ends at the next recorded
command, and the queue must be empty by the next wake after it; from there the history
was written by code that ran and is held to the usual rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from runtime.engine.commands import Command, describe, same_command
from runtime.engine.ids import start_signal_id
from runtime.engine.patches import is_deprecated_patch_marker, is_patch_marker
from runtime.engine.state import EventClass, RunState, classify
from runtime.errors import TYPE_NOT_FOUND, NonDeterminismError
from runtime.events import (
    EventAttributes,
    HistoryEvent,
    SignalReceived,
    WorkflowFailed,
    WorkflowStarted,
)


def never_ran(started: HistoryEvent, following: HistoryEvent | None) -> bool:
    """Whether the run ``started`` opened failed at once for want of its workflow type.

    No code ran then, so none runs on replay, whatever is registered now: code that has
    the type since would issue commands this run never recorded.
    """
    if following is None or following.run_id != started.run_id:
        return False
    attrs = following.attributes
    return isinstance(attrs, WorkflowFailed) and attrs.failure.type == TYPE_NOT_FOUND


def start_signal_follows(started: HistoryEvent, following: HistoryEvent | None) -> bool:
    """Whether ``started`` opened a run by signal-with-start: the start's signal (its
    request id) is the next event, and the run's code first ran with it delivered."""
    if following is None or following.run_id != started.run_id:
        return False
    attrs, start = following.attributes, started.attributes
    return (
        isinstance(attrs, SignalReceived)
        and isinstance(start, WorkflowStarted)
        and attrs.request_id == start_signal_id(start.request_id)
    )


class RecordedEvents:
    """The events being replayed and how far replay got; empty while live.

    `consume` appends one recorded event to the instance's history and applies it;
    `failures` collects every non-determinism found (the Replayer reports them).
    """

    def __init__(
        self,
        events: Sequence[HistoryEvent],
        consume: Callable[[HistoryEvent], None],
        failures: list[NonDeterminismError],
    ) -> None:
        self._events = events
        self._cursor = 0
        self._consume = consume
        self._failures = failures

    @property
    def consumed(self) -> int:
        """How many events replay has consumed (taken with `next` or matched)."""
        return self._cursor

    def peek(self) -> HistoryEvent | None:
        """The next event not consumed yet, left unconsumed."""
        return self._events[self._cursor] if self._cursor < len(self._events) else None

    def next(self) -> HistoryEvent | None:
        """The next event not consumed yet, now counted as consumed."""
        if self._cursor >= len(self._events):
            return None
        self._cursor += 1
        return self._events[self._cursor - 1]

    def check_recorded(self, run: RunState, event: HistoryEvent) -> None:
        """A recorded command the code did not issue while matching: compare it to the
        commands the code queued (lenient mode) or fail the task. A deprecated patch's
        marker that the code does not issue (any more) is passed over."""
        self._end_leniency(run)
        attrs = event.attributes
        if run.pending_commands:
            if is_deprecated_patch_marker(attrs) and not same_command(
                run.pending_commands[0], attrs
            ):
                return
            expected = run.pending_commands.pop(0)
            if not same_command(expected, attrs):
                self._mismatch(run, event.event_id, attrs, describe(expected))
        elif not run.stuck and not is_deprecated_patch_marker(attrs):
            self._mismatch(run, event.event_id, attrs, "nothing")

    def match(self, run: RunState, command: Command) -> None:
        """The code issued `command`; the next recorded command event must agree."""
        if run.pending_commands:
            run.pending_commands.append(command)
            return
        ahead = self._skip_bookkeeping()
        while (
            ahead is not None
            and is_deprecated_patch_marker(ahead.attributes)
            and not same_command(command, ahead.attributes)
        ):
            # Recorded under `deprecate_patch` by code that no longer calls it.
            self._end_leniency(run)
            self._cursor += 1
            self._consume(ahead)
            ahead = self._skip_bookkeeping()
        if ahead is not None and classify(ahead.attributes) is EventClass.COMMAND:
            if not same_command(command, ahead.attributes):
                self._mismatch(run, ahead.event_id, ahead.attributes, describe(command))
                return
            self._end_leniency(run)
            self._cursor += 1
            self._consume(ahead)
            return
        if run.lenient:
            run.pending_commands.append(command)
            return
        if ahead is None:
            last_id = self._events[-1].event_id if self._events else 0
            self._mismatch(run, last_id + 1, None, describe(command))
        else:
            self._mismatch(run, ahead.event_id, ahead.attributes, describe(command))

    def check_caught_up(self, run: RunState, event: HistoryEvent | None) -> None:
        """Replay reached a wake (``event``) or the end (None): once leniency is over, the
        commands the code queued must have been recorded by now.

        What the fixed code owed was recorded in one block after the stretch without
        code; a command still queued after that block is one the code that recorded it
        did not issue. Left queued, it would be recorded at the next message as if owed.
        """
        if run.lenient or not run.pending_commands:
            return
        got = describe(run.pending_commands[0])
        if event is not None:
            self._mismatch(run, event.event_id, event.attributes, got)
        else:
            last_id = self._events[-1].event_id if self._events else 0
            self._mismatch(run, last_id + 1, None, got)

    def has_patch_marker(self, patch_id: str) -> bool:
        """Whether the commands recorded before the next WAKE event include `patch_id`
        (recorded by `patched` or by `deprecate_patch`: either says the run took the new
        branch)."""
        for event in self._events[self._cursor :]:
            attrs = event.attributes
            if classify(attrs) is EventClass.WAKE:
                break
            if is_patch_marker(attrs, patch_id):
                return True
        return False

    @staticmethod
    def _end_leniency(run: RunState) -> None:
        """Replay reached a recorded command: leniency is over.

        Between a `WorkflowTaskFailed` and the next command event the history holds only
        wakes and bookkeeping, recorded while the code was detached; commands the fixed
        code issues there are owed, so they are queued. The next command event was
        recorded by code that ran (the queued commands caught up, or a later live step),
        so from there on a command the history lacks is non-determinism again. Without
        this a later deploy's genuine change was accepted for the rest of the run.
        """
        run.lenient = False

    def _skip_bookkeeping(self) -> HistoryEvent | None:
        """Consume the bookkeeping recorded before the next command; return what follows."""
        while self._cursor < len(self._events):
            ahead = self._events[self._cursor]
            if classify(ahead.attributes) is not EventClass.BOOKKEEPING or ahead.closes_run:
                return ahead
            self._cursor += 1
            self._consume(ahead)
        return None

    def _mismatch(
        self, run: RunState, event_id: int, expected: EventAttributes | None, got: str
    ) -> None:
        error = NonDeterminismError(
            event_id, describe(expected) if expected else "end of history", got
        )
        self._failures.append(error)
        run.pending_commands.clear()
        run.detach_code(error)
