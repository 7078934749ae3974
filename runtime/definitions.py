"""What the decorators record about workflows and activities.

The decorators only attach a definition to the function or class; registries, the client
and the engine read it back. Keeping it in one place means a workflow passed as a function,
a class, a bound `Cls.run` or a plain name all resolve to the same definition.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WORKFLOW_ATTR = "__chronik_workflow__"
ACTIVITY_ATTR = "__chronik_activity__"
RUN_ATTR = "__chronik_run__"
SIGNAL_ATTR = "__chronik_signal__"
QUERY_ATTR = "__chronik_query__"
UPDATE_ATTR = "__chronik_update__"
VALIDATOR_ATTR = "__chronik_update_validator__"


def _hints(fn: Callable[..., Any], *, skip_self: bool) -> tuple[list[Any], Any]:
    """Argument type hints (positional order) and the return hint; unknown ones are None."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    if skip_self and params:
        params = params[1:]
    args = [
        hints.get(p.name) for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return args, hints.get("return")


@dataclass(frozen=True)
class HandlerDefinition:
    """A signal, query or update method of a class-style workflow."""

    name: str
    fn: Callable[..., Any]
    arg_types: list[Any]
    return_type: Any
    is_async: bool
    validator: Callable[..., Any] | None = None


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    run_fn: Callable[..., Any]
    cls: type | None
    arg_types: list[Any]
    return_type: Any
    signals: dict[str, HandlerDefinition] = field(default_factory=dict)
    queries: dict[str, HandlerDefinition] = field(default_factory=dict)
    updates: dict[str, HandlerDefinition] = field(default_factory=dict)


@dataclass(frozen=True)
class ActivityDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    arg_types: list[Any]
    return_type: Any


def _handler(fn: Callable[..., Any], name: str) -> HandlerDefinition:
    args, ret = _hints(fn, skip_self=True)
    return HandlerDefinition(name, fn, args, ret, inspect.iscoroutinefunction(fn))


def define_workflow(target: Any, name: str | None) -> WorkflowDefinition:
    """Build the definition of a function-style or class-style workflow and attach it."""
    if inspect.isclass(target):
        run_fn = None
        signals: dict[str, HandlerDefinition] = {}
        queries: dict[str, HandlerDefinition] = {}
        updates: dict[str, HandlerDefinition] = {}
        validators: dict[str, Callable[..., Any]] = {}
        cls_name = target.__name__
        for attr in dir(target):
            member = inspect.getattr_static(target, attr, None)
            if not callable(member):
                continue
            if getattr(member, RUN_ATTR, False):
                if run_fn is not None:
                    raise TypeError(f"workflow class {cls_name} has two @workflow.run methods")
                run_fn = member
            for kind, key, found in (
                ("signal", SIGNAL_ATTR, signals),
                ("query", QUERY_ATTR, queries),
                ("update", UPDATE_ATTR, updates),
            ):
                if (handler := getattr(member, key, None)) is not None:
                    if handler in found:
                        raise TypeError(
                            f"workflow class {cls_name} has two {kind} handlers named {handler!r}"
                        )
                    found[handler] = _handler(member, handler)
            if (v := getattr(member, VALIDATOR_ATTR, None)) is not None:
                validators[v] = member
        if run_fn is None:
            raise TypeError(f"workflow class {cls_name} has no @workflow.run method")
        if not inspect.iscoroutinefunction(run_fn):
            raise TypeError(f"the @workflow.run method of {cls_name} must be `async def`")
        for update_name, validator in validators.items():
            h = updates[update_name]
            updates[update_name] = HandlerDefinition(
                h.name, h.fn, h.arg_types, h.return_type, h.is_async, validator
            )
        args, ret = _hints(run_fn, skip_self=True)
        defn = WorkflowDefinition(
            name or target.__name__, run_fn, target, args, ret, signals, queries, updates
        )
        # `Cls.run` names the workflow too; a subclass that inherits `run` must not rename
        # its base through the function they share: the first class to define it keeps it.
        if workflow_definition(run_fn) is None:
            setattr(run_fn, WORKFLOW_ATTR, defn)
    else:
        if not inspect.iscoroutinefunction(target):
            raise TypeError(f"workflow {target!r} must be an async function or a class")
        args, ret = _hints(target, skip_self=False)
        defn = WorkflowDefinition(name or target.__name__, target, None, args, ret)
    setattr(target, WORKFLOW_ATTR, defn)
    return defn


def define_activity(fn: Callable[..., Any], name: str | None) -> ActivityDefinition:
    args, ret = _hints(fn, skip_self=False)
    defn = ActivityDefinition(name or fn.__name__, fn, inspect.iscoroutinefunction(fn), args, ret)
    setattr(fn, ACTIVITY_ATTR, defn)
    return defn


def workflow_definition(target: Any) -> WorkflowDefinition | None:
    """The definition of a decorated workflow; a class's own only, never its base's (an
    undecorated subclass is not a workflow)."""
    if inspect.isclass(target):
        found = target.__dict__.get(WORKFLOW_ATTR)
        return found if isinstance(found, WorkflowDefinition) else None
    return getattr(target, WORKFLOW_ATTR, None)


def activity_definition(target: Any) -> ActivityDefinition | None:
    return getattr(target, ACTIVITY_ATTR, None)


def workflow_name(target: Any) -> str:
    """The type name of a workflow given as a name, function, class or `Cls.run`."""
    if isinstance(target, str):
        return target
    defn = workflow_definition(target)
    if defn is None:
        raise TypeError(f"{target!r} is not a @workflow.defn workflow")
    return defn.name


def handler_name(target: Any, attr: str) -> str:
    """The name of a signal/query/update given as a name or a decorated method."""
    if isinstance(target, str):
        return target
    name = getattr(target, attr, None)
    if name is None:
        raise TypeError(f"{target!r} is not a decorated handler")
    return str(name)
