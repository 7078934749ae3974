"""Fast, generic conversion between the frozen model dataclasses and fastavro's dicts.

fastavro writes and reads plain dicts. Walking dataclasses reflectively per record would
cost more than the Avro encoding itself, so for every dataclass reachable from the model
this module generates, once, a pair of plain functions from its type hints (field order,
``X | None``, ``tuple[X, ...]``, StrEnums, nested records, unions of records) and compiles
them. Union members travel as ``(full record name, dict)`` tuples: fastavro then writes the
branch without trying each one, and reads them back the same way with
``return_record_name=True`` (``return_record_name_override=True`` keeps ``X | None``
as a plain value).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

NAMESPACE = "chronik"

_PRIMITIVES: frozenset[Any] = frozenset({str, int, float, bool, bytes})

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


def avro_name(cls: type) -> str:
    """The Avro full name of a model class: the class name in the ``chronik`` namespace."""
    return f"{NAMESPACE}.{cls.__name__}"


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def is_identity(tp: Any) -> bool:
    """True when fastavro takes and returns the Python value unchanged."""
    return tp in _PRIMITIVES or tp is type(None)


class Mapper:
    """Generates and holds the converters of every class reachable from some root types."""

    def __init__(self, roots: Iterable[Any]) -> None:
        self._ns: dict[str, Any] = {"_FROM": {}, "_TO": {}}
        self._classes: dict[str, type] = {}
        self._counter = itertools.count()
        self._source: list[str] = []
        for root in roots:
            self._collect(root)
        for cls in self._classes.values():
            self._emit(cls)
        code = "\n".join(self._source)
        exec(compile(code, "<chronik.topics.mapping>", "exec"), self._ns)
        # Every record, by Avro full name, for union branches read back as (name, dict).
        self._ns["_FROM"].update(
            {avro_name(c): self._ns[f"_from_{c.__name__}"] for c in self._classes.values()}
        )
        for cls in self._classes.values():
            self._ns["_TO"][cls] = self._ns[f"_tag_{cls.__name__}"]

    @property
    def source(self) -> str:
        """The generated code, for reading when something looks wrong."""
        return "\n".join(self._source)

    @property
    def classes(self) -> dict[str, type]:
        """Every mapped dataclass, by class name."""
        return dict(self._classes)

    def encoder(self, tp: Any) -> Encoder:
        """A function from a value of type ``tp`` to what fastavro writes for it."""
        return self._compile("o", self._to(tp, "o"))

    def decoder(self, tp: Any) -> Decoder:
        """A function from what fastavro read for type ``tp`` to the Python value."""
        return self._compile("d", self._from(tp, "d"))

    # --- discovery --------------------------------------------------------------------

    def _collect(self, tp: Any) -> None:
        members = _union_members(tp)
        if members is not None:
            for member in members:
                self._collect(member)
        elif typing.get_origin(tp) is tuple:
            self._collect(typing.get_args(tp)[0])
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            self._ns[f"_E_{tp.__name__}"] = tp
        elif _is_record(tp):
            known = self._classes.get(tp.__name__)
            if known is tp:
                return
            if known is not None:
                raise TypeError(f"two model classes are named {tp.__name__}")
            self._classes[tp.__name__] = tp
            self._ns[f"C_{tp.__name__}"] = tp
            for hint in typing.get_type_hints(tp).values():
                self._collect(hint)
        elif not is_identity(tp):
            raise TypeError(f"no Avro mapping for {tp!r}")

    # --- code generation --------------------------------------------------------------

    def _var(self) -> str:
        return f"v{next(self._counter)}"

    def _emit(self, cls: type) -> None:
        name = cls.__name__
        hints = typing.get_type_hints(cls)
        fields = _field_names(cls)
        items = ", ".join(f"{f!r}: {self._to(hints[f], f'o.{f}')}" for f in fields)
        args = ", ".join(self._from(hints[f], f"d[{f!r}]") for f in fields)
        self._source += [
            f"def _to_{name}(o):\n    return {{{items}}}",
            f"def _tag_{name}(o):\n    return ({avro_name(cls)!r}, _to_{name}(o))",
            f"def _from_{name}(d):\n    return C_{name}({args})",
        ]

    def _to(self, tp: Any, src: str) -> str:
        members = _union_members(tp)
        if members is not None:
            present = [m for m in members if m is not type(None)]
            nullable = len(present) < len(members)
            if len(present) == 1:
                inner = present[0]
                if is_identity(inner) or _is_enum(inner):
                    return src
                v = self._var()
                if _is_record(inner):
                    # Tagged even when alone: fastavro then skips validating each branch.
                    return f"(None if ({v} := {src}) is None else _tag_{inner.__name__}({v}))"
                return f"(None if ({v} := {src}) is None else {self._to(inner, v)})"
            if not all(_is_record(m) for m in present):
                raise TypeError(f"only unions of records are supported, not {tp!r}")
            v = self._var()
            tagged = f"_TO[type({v})]({v})"
            if nullable:
                return f"(None if ({v} := {src}) is None else {tagged})"
            return f"(_TO[type({v} := {src})]({v}))"
        if typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            if is_identity(item) or _is_enum(item):
                return src
            x = self._var()
            return f"[{self._to(item, x)} for {x} in {src}]"
        if _is_record(tp):
            return f"_to_{tp.__name__}({src})"
        return src  # primitives; a StrEnum is its value already

    def _from(self, tp: Any, src: str) -> str:
        members = _union_members(tp)
        if members is not None:
            present = [m for m in members if m is not type(None)]
            if len(present) == 1:
                inner = present[0]
                if is_identity(inner):
                    return src
                v = self._var()
                return f"(None if ({v} := {src}) is None else {self._from(inner, v)})"
            v = self._var()
            tagged = f"_FROM[{v}[0]]({v}[1])"
            if len(present) < len(members):
                return f"(None if ({v} := {src}) is None else {tagged})"
            return f"_FROM[({v} := {src})[0]]({v}[1])"
        if typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            if is_identity(item):
                return f"tuple({src})"
            x = self._var()
            return f"tuple([{self._from(item, x)} for {x} in {src}])"
        if _is_enum(tp):
            return f"_E_{tp.__name__}({src})"
        if _is_record(tp):
            return f"_from_{tp.__name__}({src})"
        return src

    def _compile(self, arg: str, expr: str) -> Callable[[Any], Any]:
        name = f"_root{next(self._counter)}"
        source = f"def {name}({arg}):\n    return {expr}"
        self._source.append(source)
        exec(compile(source, "<chronik.topics.mapping>", "exec"), self._ns)
        fn: Callable[[Any], Any] = self._ns[name]
        return fn


def _is_record(tp: Any) -> bool:
    """A dataclass or a NamedTuple: both map to an Avro record of the same fields."""
    if not isinstance(tp, type):
        return False
    return dataclasses.is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields"))


def _field_names(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return list(getattr(cls, "_fields"))  # noqa: B009 - NamedTuple, checked by _is_record


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)
