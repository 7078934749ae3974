"""Registries: the code a host can run, looked up by type name.

A registry also carries the `DataConverter`, because reading workflow inputs and writing
results is part of running the code (and an encryption codec's key lives with the code).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runtime.converter import DataConverter
from runtime.definitions import (
    ActivityDefinition,
    WorkflowDefinition,
    activity_definition,
    workflow_definition,
)


class WorkflowRegistry:
    def __init__(
        self, workflows: Iterable[Any] = (), *, converter: DataConverter | None = None
    ) -> None:
        self.converter = converter or DataConverter()
        self._by_name: dict[str, WorkflowDefinition] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, workflow: Any) -> None:
        defn = (
            workflow if isinstance(workflow, WorkflowDefinition) else workflow_definition(workflow)
        )
        if defn is None:
            raise TypeError(f"{workflow!r} is not a @workflow.defn workflow")
        self._by_name[defn.name] = defn

    def get(self, name: str) -> WorkflowDefinition | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)


class ActivityRegistry:
    def __init__(
        self, activities: Iterable[Any] = (), *, converter: DataConverter | None = None
    ) -> None:
        self.converter = converter or DataConverter()
        self._by_name: dict[str, ActivityDefinition] = {}
        for act in activities:
            self.add(act)

    def add(self, activity: Any) -> None:
        defn = (
            activity if isinstance(activity, ActivityDefinition) else activity_definition(activity)
        )
        if defn is None:
            raise TypeError(f"{activity!r} is not an @activity.defn activity")
        self._by_name[defn.name] = defn

    def get(self, name: str) -> ActivityDefinition | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)
