"""Instances of every model class, built from the type hints so a new field is covered at once.

Two per class: ``full`` sets every optional field, fills every tuple, nests failures with
causes; ``minimal`` leaves optionals None and tuples empty. Values are distinct and
non-trivial (negative and 64-bit numbers, non-ASCII text, binary bytes) so a serde that
swaps, truncates or re-encodes anything shows up as an inequality.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import types
import typing
from typing import Any

from runtime.payloads import Failure, Payload

_counter = itertools.count(1)


def nested_failure() -> Failure:
    """Three levels of cause, with details, as an activity error wrapped by a child error."""
    root = Failure(
        "disk full ✗", kind="application", type="OSError", stack_trace="Traceback…\n  x",
        non_retryable=True, details=(Payload("json/plain", b'{"free": 0}'),),
    )  # fmt: skip
    middle = Failure("activity failed", kind="activity", type="ActivityError", cause=root)
    return Failure("child failed", kind="child_workflow", timeout_type="", cause=middle)


def _value(tp: Any, full: bool, depth: int) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if not full and len(members) < len(typing.get_args(tp)):
            return None
        return _value(members[next(_counter) % len(members)], full, depth)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_value(item, full, depth) for _ in range(2)) if full else ()
    if tp is str:
        return f"s{next(_counter)}-é漢"
    if tp is int:
        return (1 << 40) + next(_counter) if full else -next(_counter)
    if tp is float:
        return 1.5 + next(_counter)
    if tp is bool:
        return full
    if tp is bytes:
        return b"\x00\xff" + str(next(_counter)).encode()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = list(tp)
        return members[next(_counter) % len(members)]
    if tp is Failure:
        return nested_failure() if full else Failure(f"m{next(_counter)}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, full=full, depth=depth + 1)
    raise TypeError(tp)


def build(cls: type, *, full: bool, depth: int = 0) -> Any:
    """An instance of ``cls`` (``full``: every optional set; else all optionals None)."""
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _value(hints[f.name], full, depth) for f in dataclasses.fields(cls)}
    return cls(**kwargs)


def union_members(alias: Any) -> list[type]:
    return [m for m in typing.get_args(alias) if m is not type(None)]
