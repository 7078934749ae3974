"""`Replayer`: check recorded histories against today's workflow code.

This is the debugging tool for production histories and the guard in CI before a deploy:
it runs the same engine as the workers (`WorkflowInstance.restore`), over every run in
the history (or, with ``all_runs=False``, the newest run only: what a worker replays),
and raises `NonDeterminismError` naming the first event the code disagrees with (event
id, what history has, what the code issued).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.converter import DataConverter
from runtime.engine.instance import WorkflowInstance
from runtime.engine.registry import WorkflowRegistry
from runtime.engine.replay import never_ran
from runtime.errors import NonDeterminismError, WorkflowTypeNotRegisteredError
from runtime.events import HistoryEvent, WorkflowStarted
from runtime.history_json import history_from_json, history_to_json
from runtime.messages import WorkflowStatus

__all__ = ["ReplayResult", "Replayer", "history_from_json", "history_to_json"]


@dataclass(frozen=True)
class ReplayResult:
    workflow_id: str
    events: int
    runs: int
    status: WorkflowStatus | None
    error: NonDeterminismError | None


class Replayer:
    def __init__(
        self, workflows: Iterable[Any], *, data_converter: DataConverter | None = None
    ) -> None:
        self.registry = WorkflowRegistry(workflows, converter=data_converter)

    def replay_workflow(
        self,
        history: Sequence[HistoryEvent] | str | Path,
        *,
        raise_on_error: bool = True,
        all_runs: bool = True,
    ) -> ReplayResult:
        """Replay one workflow id's history (events, a JSON string or a JSON file path).

        Every run's code by default, the strictest check. ``all_runs=False`` replays only
        the newest run's, as a worker does: the runs it continued from are closed, and
        code that could not follow them (changed since they ran) fails no task.
        """
        events = self._load(history)
        if not events:
            raise ValueError("empty history")
        workflow_id = events[0].workflow_id
        if len(ids := {e.workflow_id for e in events}) > 1:
            raise ValueError(
                f"the history holds {len(ids)} workflow ids ({', '.join(sorted(ids)[:3])}...): "
                "replay one id's events (`chronik history tail --workflow ID`), or pass "
                "each to replay_workflows"
            )
        instance = WorkflowInstance.restore(
            workflow_id, events, self.registry, replay_all_runs=all_runs
        )
        error = self._unknown_type(events, all_runs) or (
            instance.task_failures[0] if instance.task_failures else None
        )
        if error is not None and raise_on_error:
            raise error
        status = instance.status()
        runs = len({e.run_id for e in events})
        return ReplayResult(
            workflow_id, len(events), runs, status.status if status else None, error
        )

    def replay_workflows(
        self, histories: Iterable[Sequence[HistoryEvent] | str | Path], *, all_runs: bool = True
    ) -> list[ReplayResult]:
        """Replay many histories; never raises, each result carries its own error."""
        return [self.replay_workflow(h, raise_on_error=False, all_runs=all_runs) for h in histories]

    def _unknown_type(
        self, events: Sequence[HistoryEvent], all_runs: bool
    ) -> NonDeterminismError | None:
        """A run whose workflow ran code this registry has no type for: nothing could be
        checked, which must not pass for a successful replay (the type was renamed, or is
        missing from the list). A start that failed for want of the type ran no code.
        Without `all_runs` only the newest run counts: the others' code is not replayed."""
        starts = [i for i, e in enumerate(events) if isinstance(e.attributes, WorkflowStarted)]
        first = 0 if all_runs or not starts else starts[-1]
        for index, event in enumerate(events[first:], start=first):
            attrs = event.attributes
            if not isinstance(attrs, WorkflowStarted) or self.registry.get(attrs.workflow_type):
                continue
            following = events[index + 1] if index + 1 < len(events) else None
            if not never_ran(event, following):
                return WorkflowTypeNotRegisteredError(
                    event.event_id, attrs.workflow_type, replayer_has=self.registry.names()
                )
        return None

    @staticmethod
    def _load(history: Sequence[HistoryEvent] | str | Path) -> list[HistoryEvent]:
        if isinstance(history, Path):
            return history_from_json(history.read_text())
        if isinstance(history, str):
            if history.lstrip().startswith(("{", "[")):
                return history_from_json(history)
            return history_from_json(Path(history).read_text())
        return list(history)
