"""What a worker runs: the task queue, its workflows and activities, how it runs them.

Hosts (the in-memory environment, the Kafka worker) read a `WorkerSpec`; `workers.Worker`
is the user-facing wrapper that builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from runtime.converter import DataConverter
from runtime.engine.registry import ActivityRegistry, WorkflowRegistry


@dataclass
class WorkerSpec:
    task_queue: str
    workflows: Sequence[Any] = ()
    activities: Sequence[Any] = ()
    #: Runs plain (non-async) activities; None: the loop's default thread pool.
    activity_executor: Executor | None = None
    max_concurrent_activities: int = 100
    data_converter: DataConverter = field(default_factory=DataConverter)

    def workflow_registry(self) -> WorkflowRegistry:
        return WorkflowRegistry(self.workflows, converter=self.data_converter)

    def activity_registry(self) -> ActivityRegistry:
        return ActivityRegistry(self.activities, converter=self.data_converter)
