"""What a worker runs: the task queue, its workflows and activities, how it runs them.

Hosts (the in-memory environment, the Kafka worker) read a `WorkerSpec`; `workers.Worker`
is the user-facing wrapper that builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from runtime.converter import DataConverter
from runtime.engine.registry import ActivityRegistry, WorkflowRegistry

#: How long a stopping worker lets running activities finish before it cancels them. A
#: cancelled one then has 5 s (`CANCEL_GRACE_S`) to stop, and the worker a few more to
#: commit and leave the group: the whole stop stays within Kubernetes' default
#: termination grace period (30 s), past which the process is killed before it committed
#: the offsets of the activities that did finish, and those ran again.
DEFAULT_GRACEFUL_SHUTDOWN = timedelta(seconds=20)


@dataclass
class WorkerSpec:
    task_queue: str
    workflows: Sequence[Any] = ()
    activities: Sequence[Any] = ()
    #: Runs plain (non-async) activities; None: the loop's default thread pool.
    activity_executor: Executor | None = None
    max_concurrent_activities: int = 100
    data_converter: DataConverter = field(default_factory=DataConverter)
    #: Temporal's ``graceful_shutdown_timeout``: see `DEFAULT_GRACEFUL_SHUTDOWN`.
    graceful_shutdown_timeout: timedelta = DEFAULT_GRACEFUL_SHUTDOWN

    def workflow_registry(self) -> WorkflowRegistry:
        return WorkflowRegistry(self.workflows, converter=self.data_converter)

    def activity_registry(self) -> ActivityRegistry:
        return ActivityRegistry(self.activities, converter=self.data_converter)
