"""`Replayer`: check recorded histories against today's workflow code.

This is the debugging tool for production histories and the guard in CI before a deploy:
it runs the same engine as the workers (`WorkflowInstance.restore`), over every run in
the history, and raises `NonDeterminismError` naming the first event the code disagrees
with (event id, what history has, what the code issued).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.converter import DataConverter
from runtime.engine.instance import WorkflowInstance
from runtime.engine.registry import WorkflowRegistry
from runtime.errors import NonDeterminismError
from runtime.events import HistoryEvent
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
        self, history: Sequence[HistoryEvent] | str | Path, *, raise_on_error: bool = True
    ) -> ReplayResult:
        """Replay one workflow id's history (events, a JSON string or a JSON file path)."""
        events = self._load(history)
        if not events:
            raise ValueError("empty history")
        workflow_id = events[0].workflow_id
        instance = WorkflowInstance.restore(
            workflow_id, events, self.registry, replay_all_runs=True
        )
        error = instance.task_failures[0] if instance.task_failures else None
        if error is not None and raise_on_error:
            raise error
        status = instance.status()
        runs = len({e.run_id for e in events})
        return ReplayResult(
            workflow_id, len(events), runs, status.status if status else None, error
        )

    def replay_workflows(
        self, histories: Iterable[Sequence[HistoryEvent] | str | Path]
    ) -> list[ReplayResult]:
        """Replay many histories; never raises, each result carries its own error."""
        return [self.replay_workflow(h, raise_on_error=False) for h in histories]

    @staticmethod
    def _load(history: Sequence[HistoryEvent] | str | Path) -> list[HistoryEvent]:
        if isinstance(history, Path):
            return history_from_json(history.read_text())
        if isinstance(history, str):
            if history.lstrip().startswith(("{", "[")):
                return history_from_json(history)
            return history_from_json(Path(history).read_text())
        return list(history)
