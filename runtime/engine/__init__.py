"""The pure durable-execution engine: no Kafka, no I/O, no wall clock.

Hosts (the Kafka workflow worker, the in-memory test environment) use exactly this:
registries of code, `WorkflowInstance.restore/handle` producing `Transition`s, and
`run_activity` to execute activity tasks.
"""

from runtime.engine.activity_executor import run_activity
from runtime.engine.ids import is_activity_timer
from runtime.engine.instance import WorkflowInstance, derive_run_id
from runtime.engine.registry import ActivityRegistry, WorkflowRegistry
from runtime.engine.run_events import closed_status
from runtime.engine.transition import Transition

__all__ = [
    "ActivityRegistry",
    "Transition",
    "WorkflowInstance",
    "WorkflowRegistry",
    "closed_status",
    "derive_run_id",
    "is_activity_timer",
    "run_activity",
]
