"""What the decorators record about workflows and activities.

The decorators only attach a definition to the function or class; registries, the client
and the engine read it back. Keeping it in one place means a workflow passed as a function,
a class, a bound `Cls.run` or a plain name all resolve to the same definition.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

WORKFLOW_ATTR = "__chronik_workflow__"
ACTIVITY_ATTR = "__chronik_activity__"
RUN_ATTR = "__chronik_run__"
SIGNAL_ATTR = "__chronik_signal__"
QUERY_ATTR = "__chronik_query__"
UPDATE_ATTR = "__chronik_update__"
VALIDATOR_ATTR = "__chronik_update_validator__"


class TypeHints:
    """The argument and return hints of a function, resolved the first time they are needed.

    Resolving them at decoration time broke on `from __future__ import annotations` as soon
    as a hint named a class defined further down the module (`async def act(o: Order)` above
    `class Order`): the failure was swallowed, every hint became None and the function got
    plain dicts. By first use the module has finished loading. A hint that still does not
    resolve raises, naming the function, rather than degrade to untyped values.
    """

    def __init__(self, fn: Callable[..., Any], *, skip_self: bool) -> None:
        self._fn = fn
        self._skip_self = skip_self

    @functools.cached_property
    def _resolved(self) -> tuple[list[Any], Any]:
        try:
            hints = typing.get_type_hints(self._fn)
        except Exception as exc:
            raise TypeError(
                f"cannot resolve the type hints of {self._fn.__qualname__}: {exc} (a name "
                "imported only under TYPE_CHECKING, or a class local to a function?)"
            ) from exc
        params = list(inspect.signature(self._fn).parameters.values())
        if self._skip_self and params:
            params = params[1:]
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [hints.get(p.name) for p in params if p.kind in positional], hints.get("return")

    @property
    def args(self) -> list[Any]:
        """Argument hints in positional order; None for an unannotated one."""
        return self._resolved[0]

    @property
    def returns(self) -> Any:
        return self._resolved[1]


class _Hinted:
    """A definition's argument and return hints, through its `TypeHints`."""

    hints: TypeHints

    @property
    def arg_types(self) -> list[Any]:
        return self.hints.args

    @property
    def return_type(self) -> Any:
        return self.hints.returns


@dataclass(frozen=True)
class HandlerDefinition(_Hinted):
    """A signal, query or update method of a class-style workflow."""

    name: str
    fn: Callable[..., Any]
    hints: TypeHints
    is_async: bool
    validator: Callable[..., Any] | None = None


@dataclass(frozen=True)
class WorkflowDefinition(_Hinted):
    name: str
    run_fn: Callable[..., Any]
    cls: type | None
    hints: TypeHints
    signals: dict[str, HandlerDefinition] = field(default_factory=dict)
    queries: dict[str, HandlerDefinition] = field(default_factory=dict)
    updates: dict[str, HandlerDefinition] = field(default_factory=dict)


@dataclass(frozen=True)
class ActivityDefinition(_Hinted):
    name: str
    fn: Callable[..., Any]
    is_async: bool
    hints: TypeHints


def _handler(fn: Callable[..., Any], name: str) -> HandlerDefinition:
    return HandlerDefinition(
        name, fn, TypeHints(fn, skip_self=True), inspect.iscoroutinefunction(fn)
    )


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
            updates[update_name] = replace(updates[update_name], validator=validator)
        hints = TypeHints(run_fn, skip_self=True)
        defn = WorkflowDefinition(
            name or target.__name__, run_fn, target, hints, signals, queries, updates
        )
        # `Cls.run` names the workflow too; a subclass that inherits `run` must not rename
        # its base through the function they share: the first class to define it keeps it.
        if workflow_definition(run_fn) is None:
            setattr(run_fn, WORKFLOW_ATTR, defn)
    else:
        if not inspect.iscoroutinefunction(target):
            raise TypeError(f"workflow {target!r} must be an async function or a class")
        hints = TypeHints(target, skip_self=False)
        defn = WorkflowDefinition(name or target.__name__, target, None, hints)
    setattr(target, WORKFLOW_ATTR, defn)
    return defn


def define_activity(fn: Callable[..., Any], name: str | None) -> ActivityDefinition:
    hints = TypeHints(fn, skip_self=False)
    defn = ActivityDefinition(name or fn.__name__, fn, inspect.iscoroutinefunction(fn), hints)
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
