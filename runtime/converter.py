"""Turning Python values into payloads and back: a converter plus a codec chain.

The converter decides the *format* (JSON by default: dataclasses, datetimes, enums,
pydantic models when pydantic is installed); codecs transform the bytes (compression,
encryption) and run in order on encode, in reverse on decode. Both run wherever user
values are read, which in Chronik includes the workflow worker: an encryption codec
therefore needs its key on workflow workers, clients and activity workers, never on Kafka.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import importlib
import itertools
import json
import math
import re
import threading
import types
import typing
import uuid
import zlib
from collections import abc
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Protocol

from runtime.payloads import Payload

_pydantic: Any
try:  # pydantic support is optional: used when installed, never required
    _pydantic = importlib.import_module("pydantic")
except ImportError:  # pragma: no cover - depends on the environment
    _pydantic = None

JSON_ENCODING = "json/plain"
NULL_ENCODING = "binary/null"
#: Top-level bytes travel as they are (Temporal's encoding name): read back as bytes even
#: without a type hint (an activity called by name, heartbeat details), not as text.
BINARY_ENCODING = "binary/plain"
#: JSON whose nested bytes are base64 text, as protobuf's JSON, Go, Java and .NET write
#: bytes. A value with nested bytes travels under this name, a value without them under
#: ``json/plain`` as before: earlier writers put nested bytes in ``json/plain`` as latin-1
#: text, which nothing in the JSON tells from base64 (``"abcd"`` is both), and recorded
#: histories must read as they were written.
JSON_BASE64_BYTES_ENCODING = "json/plain;bytes=base64"


class PayloadConverter(Protocol):
    """Serializes one value; `type_hint` (may be None) guides decoding."""

    def to_payload(self, value: Any) -> Payload: ...

    def from_payload(self, payload: Payload, type_hint: Any = None) -> Any: ...


class PayloadCodec(Protocol):
    """Transforms payload bytes: compression, encryption. Must be reversible."""

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]: ...

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]: ...


class _UnconvertibleError(Exception):
    """A value JSON cannot carry, and the path to it, collected on the way out of the walk
    (cheaper than building a path for every value that converts)."""

    def __init__(self, what: str, why: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.why = why
        self.steps: list[str] = []  # innermost first

    def error(self) -> TypeError:
        where = "$" + "".join(reversed(self.steps))
        why = f": {self.why}" if self.why else ""
        return TypeError(f"cannot convert {self.what} to JSON at {where}{why}")


class _NestedBytesError(Exception):
    """Bytes met while walking a value for ``json/plain``: the walk starts again for the
    base64 encoding, so that a value without bytes (nearly all) pays nothing for them."""


class _BytesForm(threading.local):
    """How the walk in this thread writes and reads nested bytes: base64 for the encoding
    that says so, latin-1 (the old form) for ``json/plain``. Per thread because activities
    convert on pool threads; saved and restored around each walk (`_in_bytes_form`) since a
    pydantic serializer or validator may call a converter from inside one."""

    base64 = False


_bytes_form = _BytesForm()


def _in_bytes_form(as_base64: bool, walk: typing.Callable[..., Any], *args: Any) -> Any:
    outer = _bytes_form.base64
    if outer is as_base64:  # the usual case: json/plain, outside any other walk
        return walk(*args)
    _bytes_form.base64 = as_base64
    try:
        return walk(*args)
    finally:
        _bytes_form.base64 = outer


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            # `json` would write Infinity/NaN, which is not JSON: parsers of other
            # languages refuse the whole payload, so refuse it here, where it is made.
            raise _UnconvertibleError(f"float {value}", "JSON has no NaN or Infinity")
        return value
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, enum.Enum):
        return _to_jsonable(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _duration_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        # Text, as pydantic writes it: a JSON number is read as a double here and in most
        # languages, which would round the very values Decimal exists to keep exact.
        if not value.is_finite():
            raise _UnconvertibleError(f"Decimal {value}", "JSON has no NaN or Infinity")
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _object_to_jsonable(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        )
    if _pydantic is not None and isinstance(value, _pydantic.BaseModel):
        # pydantic's JSON mode leaves non-finite floats as they are: check its output too.
        return _to_jsonable(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return _dict_to_jsonable(value)
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_to_jsonable(item))
            except _UnconvertibleError as refused:
                refused.steps.append(f"[{index}]")
                raise
        return items
    if isinstance(value, set | frozenset):
        return _set_to_jsonable(value)
    if isinstance(value, bytes):
        if not _bytes_form.base64:
            raise _NestedBytesError
        return base64.b64encode(value).decode("ascii")
    raise _UnconvertibleError(type(value).__name__)


#: Element types whose values all compare with each other, totally: a set of them is
#: written sorted by value. Each family is one ``isinstance`` test; ``datetime`` comes
#: before ``date`` because it is one, yet the two do not compare.
_ORDERED_FAMILIES: tuple[type | tuple[type, ...], ...] = (
    str,
    (int, float, Decimal),
    bytes,
    datetime,
    date,
    time,
    timedelta,
    uuid.UUID,
)


#: The family of each exact type in `_ORDERED_FAMILIES`, looked up before searching them.
_FAMILY_OF: dict[type, type | tuple[type, ...]] = {
    member: family
    for family in _ORDERED_FAMILIES
    for member in (family if isinstance(family, tuple) else (family,))
}


def _set_to_jsonable(value: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items in an order that does not depend on the process: iteration order
    follows hashes, and `str` hashes are salted per process, so the same set would write
    different bytes in two workers (payloads are recorded, compared, used as keys).

    Sorted by value when every item is of one totally ordered family (``{10, 9}`` is
    ``[9,10]``); otherwise by each item's JSON text, which is deterministic whatever the
    items are (a set of enums, of frozensets, of mixed types). A partial order such as
    frozensets' subset test would sort differently by input order, hence the families."""
    items = list(value)
    ordered = len(items) < 2
    if not ordered:
        first = items[0]
        family = _FAMILY_OF.get(type(first))
        if family is None:  # a subclass: StrEnum, IntEnum, a datetime subclass
            family = next((f for f in _ORDERED_FAMILIES if isinstance(first, f)), None)
        if family is not None:
            for item in items:
                if not isinstance(item, family):
                    break
            else:
                try:
                    items.sort()
                    ordered = True
                except (TypeError, ArithmeticError):  # naive with aware, Decimal NaN
                    pass
    plain = []
    for item in items:
        try:
            plain.append(_to_jsonable(item))
        except _UnconvertibleError as refused:
            refused.steps.append(" (a set item)")
            raise
    if not ordered:
        plain.sort(key=_JSON.encode)
    return plain


def _object_to_jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, item in fields.items():
        try:
            out[name] = _to_jsonable(item)
        except _UnconvertibleError as refused:
            refused.steps.append(f".{name}")
            raise
    return out


def _dict_to_jsonable(value: dict[Any, Any]) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        try:
            text = _key(key)
        except _UnconvertibleError as refused:
            refused.steps.append(" (a dict key)")
            raise
        if text in out:  # {1: ..., "1": ...}: JSON would keep only one of them
            raise _UnconvertibleError(f"dict key {key!r}", f"two keys write as {text!r}")
        try:
            out[text] = _to_jsonable(item)
        except _UnconvertibleError as refused:
            refused.steps.append(f".{text}" if text.isidentifier() else f"[{text!r}]")
            raise
    return out


def _duration_text(value: timedelta) -> str:
    """Protobuf's JSON form of a Duration (``"1.500s"``), from whole microseconds.

    Float seconds (`total_seconds()`, the form used before) run out of bits past about
    285 years, and `timedelta.max` rounded up beyond the range it came from; text keeps
    every microsecond, and this form is the one Temporal's protobuf JSON and Go's
    `time.ParseDuration` read.
    """
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    seconds, fraction = divmod(abs(micros), 1_000_000)
    sign = "-" if micros < 0 else ""
    if fraction == 0:
        return f"{sign}{seconds}s"
    if fraction % 1000 == 0:
        return f"{sign}{seconds}.{fraction // 1000:03d}s"
    return f"{sign}{seconds}.{fraction:06d}s"


#: Protobuf's Duration text: up to nanoseconds, which other writers may send.
_DURATION_TEXT = re.compile(r"-?[0-9]+(\.[0-9]{1,9})?s")


def _from_duration(value: Any) -> timedelta:
    """A timedelta from its text form, or from the float seconds recorded before it: old
    histories must replay, and a JSON number of seconds is what other writers may send."""
    try:
        if isinstance(value, str):
            if not _DURATION_TEXT.fullmatch(value):
                raise ValueError(f"{value!r} is not a duration such as '1.5s'")
            micros = (Decimal(value[:-1]) * 1_000_000).to_integral_value(ROUND_HALF_EVEN)
            return timedelta(microseconds=int(micros))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
    except OverflowError:
        raise ValueError(f"duration {value!r} is out of range for a timedelta") from None
    raise TypeError(f"expected a duration, got {type(value).__name__} {value!r}")


def _from_decimal(value: Any) -> Decimal:
    """Its text exactly; a JSON number (another writer's) by its shortest repr, so that
    ``1.1`` is ``Decimal("1.1")`` and not the double nearest to it."""
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    else:
        raise TypeError(f"expected a decimal, got {type(value).__name__} {value!r}")
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite decimal")
    return number


def _key(key: Any) -> str:
    """A JSON object key: strings as they are, anything else as its JSON value's text
    (an enum by its value, not ``str(member)``, which no decoder reads back)."""
    plain = _to_jsonable(key)
    return plain if isinstance(plain, str) else _JSON.encode(plain)


_PRIMITIVE_JSON = (str, int, float, bool)


def _fits(value: Any, member: Any) -> bool:
    """Whether a JSON value already is a value of the primitive type ``member`` (a JSON
    number without a fraction reads as an int, which a float accepts; a bool is no int)."""
    if member is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if member is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, member)


def _from_union(value: Any, hint: Any, members: tuple[Any, ...]) -> Any:
    """The first member, in the declared order, that takes ``value``: ``Status | str``
    reads ``"ok"`` as ``Status.OK`` and ``"other"`` as text. A primitive member takes
    only its own JSON type (``str | int`` keeps ``5`` an int); a float member widens an
    int only when no member takes it as it is (``float | int`` keeps ``5``). A value no
    member takes is an error, not the raw JSON."""
    candidates = [m for m in members if m is not type(None)]
    for member in candidates:
        if member in _PRIMITIVE_JSON:
            if _fits(value, member) and (member is not float or isinstance(value, float)):
                return value
            continue
        try:
            return _from_jsonable(value, member)
        except (TypeError, ValueError, KeyError):
            continue
    if float in candidates and _fits(value, float):
        return float(value)
    raise TypeError(f"{value!r} is none of {hint}")


#: What a parameterized abstract collection hint is built as, so that its items decode
#: through their hint; a bare ``Sequence`` or ``Mapping`` takes the JSON value as it is.
_CONCRETE: dict[Any, type] = {
    abc.Iterable: list,
    abc.Collection: list,
    abc.Sequence: list,
    abc.MutableSequence: list,
    abc.Set: set,
    abc.MutableSet: set,
    abc.Mapping: dict,
    abc.MutableMapping: dict,
}


def _expect_shape(value: Any, shape: type, hint: Any) -> None:
    """Refuse a JSON value of another shape: iterating a string or an object's keys
    instead would invent a value the writer never sent."""
    if not isinstance(value, shape):
        name = "array" if shape is list else "object"
        raise TypeError(f"expected a JSON {name} for {hint}, got {type(value).__name__} {value!r}")


class _NullRefusedError(TypeError):
    """A JSON null where the hint does not admit None, with the path to it collected on
    the way out (as `_UnconvertibleError` does). A `TypeError`, so that a union goes on to
    its next member."""

    def __init__(self, hint: Any) -> None:
        super().__init__(f"null for {_hint_text(hint)}")
        self.hint = hint
        self.steps: list[str] = []  # innermost first

    def error(self) -> TypeError:
        where = "$" + "".join(reversed(self.steps))
        return TypeError(
            f"cannot decode null at {where} as {_hint_text(self.hint)}: the hint does not "
            "admit None (Optional[...] or `| None` does)"
        )


def _hint_text(hint: Any) -> str:
    return hint.__qualname__ if isinstance(hint, type) else repr(hint).replace("typing.", "")


def _admits_none(hint: Any) -> bool:
    try:
        return _admits_none_cached(hint)
    except TypeError:  # unhashable: an Annotated hint's metadata, say
        return _hint_admits_none(hint)


@functools.lru_cache(maxsize=4096)
def _admits_none_cached(hint: Any) -> bool:
    """Cached: a null where the hint admits it (an optional field) is common, and taking
    the hint apart each time cost more than decoding the rest of a small dataclass."""
    return _hint_admits_none(hint)


def _hint_admits_none(hint: Any) -> bool:
    """Whether a hint says None is a value the code expects. A dataclass field's default of
    None does not count: the default stands in for a field the JSON lacks, and a writer
    that sends null for ``x: int`` hands the code a value its type says cannot be there."""
    if hint is None or hint is Any or hint is object or hint is type(None):
        return True
    if isinstance(hint, typing.TypeVar):  # a bare generic's parameter: anything, as JSON
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_hint_admits_none(member) for member in args)
    if origin is typing.Annotated:
        return _hint_admits_none(args[0])
    if origin is typing.Literal:
        return None in args
    if isinstance(hint, typing.NewType):
        return _hint_admits_none(hint.__supertype__)
    return False


def _from_jsonable(value: Any, hint: Any) -> Any:
    if hint is None or hint is Any:
        return value
    if value is None:
        if _admits_none(hint):
            return None
        raise _NullRefusedError(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _from_union(value, hint, args)
    if origin is typing.Annotated:  # metadata is for other tools: decode what it wraps
        return _from_jsonable(value, args[0])
    if isinstance(hint, typing.NewType):
        return _from_jsonable(value, hint.__supertype__)
    if origin is typing.Literal:
        return _from_literal(value, hint, args)
    if typing.is_typeddict(hint):
        return _from_typed_dict(value, hint)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):  # Page[Order]
        variables = getattr(origin, "__parameters__", ())
        return _from_dataclass(value, origin, dict(zip(variables, args, strict=False)))
    container = _CONCRETE.get(origin, origin) if origin is not None else hint
    if container in (list, set, frozenset, tuple):
        _expect_shape(value, list, hint)
        if container is tuple and len(args) >= 1 and args[-1] is not Ellipsis:
            if len(value) != len(args):  # a fixed tuple: cutting or padding would lose data
                raise TypeError(f"expected {len(args)} items for {hint}, got {len(value)}")
            return tuple(_from_items(value, args))
        item = args[0] if args else None
        return container(_from_items(value, itertools.repeat(item)))
    if container is dict:
        _expect_shape(value, dict, hint)
        key_hint, value_hint = args if args else (None, None)
        return _from_dict(value, key_hint, value_hint)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _from_dataclass(value, hint)
        if issubclass(hint, tuple) and hasattr(hint, "_fields"):  # a NamedTuple
            return _from_named_tuple(value, hint)
        if _pydantic is not None and issubclass(hint, _pydantic.BaseModel):
            model: Any = hint
            return model.model_validate(value)
        if issubclass(hint, enum.Enum):
            return hint(value)
        if issubclass(hint, datetime):
            return datetime.fromisoformat(value)
        if issubclass(hint, date):
            return date.fromisoformat(value)
        if issubclass(hint, time):
            return time.fromisoformat(value)
        if issubclass(hint, timedelta):
            return _from_duration(value)
        if issubclass(hint, uuid.UUID):
            if not isinstance(value, str):  # UUID(5) raises AttributeError, past a union
                raise TypeError(f"expected a UUID as text, got {type(value).__name__} {value!r}")
            return uuid.UUID(value)
        if issubclass(hint, Decimal):
            return _from_decimal(value)
        if hint is bytes:
            if not isinstance(value, str):
                raise TypeError(f"expected bytes as text, got {type(value).__name__} {value!r}")
            if not _bytes_form.base64:
                return value.encode("latin-1")
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError(f"{value!r} is not base64") from None
        if hint in _PRIMITIVE_JSON:
            if not _fits(value, hint):
                # Converting would lose or invent data: 3.99 as an int, a dict as a str.
                raise TypeError(f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
            return float(value) if hint is float else value
        if hint.__module__ != "builtins" and not isinstance(value, hint):  # Sequence, Mapping
            raise TypeError(
                f"cannot decode a value into {hint.__qualname__}: the JSON converter knows "
                "dataclasses, NamedTuples, enums, pydantic models, datetimes, UUIDs, Decimals and "
                "builtins (use a custom PayloadConverter for others)"
            )
    return value


def _from_items(value: list[Any], hints: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    try:
        for item, hint in zip(value, hints, strict=False):  # `hints` may be endless
            out.append(_from_jsonable(item, hint))
    except _NullRefusedError as refused:
        refused.steps.append(f"[{len(out)}]")  # the index of the item that failed
        raise
    return out


def _from_dict(value: dict[str, Any], key_hint: Any, value_hint: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    key = ""
    try:
        for key, item in value.items():
            out[_from_key(key, key_hint)] = _from_jsonable(item, value_hint)
    except _NullRefusedError as refused:
        refused.steps.append(_member_step(key))
        raise
    return out


def _member_step(name: str) -> str:
    return f".{name}" if name.isidentifier() else f"[{name!r}]"


def _from_fields(
    value: dict[str, Any], names: Iterable[str], hints: dict[str, Any]
) -> dict[str, Any]:
    """The named members of a JSON object decoded by their hints, those it lacks left out."""
    out: dict[str, Any] = {}
    name = ""
    try:
        for name in names:
            if name in value:
                out[name] = _from_jsonable(value[name], hints.get(name))
    except _NullRefusedError as refused:
        refused.steps.append(_member_step(name))
        raise
    return out


@functools.lru_cache(maxsize=4096)
def _field_hints(cls: Any, *, include_extras: bool = False) -> dict[str, Any]:
    """A class's field hints, or a `TypeError` saying why they cannot be had: a class local
    to a function under `from __future__ import annotations` names classes that are not
    module globals, and the `NameError` escaped what catches conversion errors (unions).

    Cached: resolving them took some 100 µs of every decode of a small dataclass. Only a
    resolution that succeeded is kept (a class whose hints name a class defined later
    resolves once that class exists). Callers must not change the dict they get.
    """
    try:
        return typing.get_type_hints(cls, include_extras=include_extras)
    except NameError as exc:
        raise TypeError(
            f"cannot decode {cls.__qualname__}: its field hints do not resolve ({exc}); "
            "define the classes it names at module level"
        ) from exc


def _substitute(hint: Any, bound: dict[Any, Any]) -> Any:
    """``hint`` with the type variables of a generic class replaced by the arguments it
    was given (``list[T]`` in ``Page[Order]`` is ``list[Order]``)."""
    if isinstance(hint, typing.TypeVar):
        return bound.get(hint, hint)
    parameters = getattr(hint, "__parameters__", ())
    if parameters and typing.get_origin(hint) is not None:
        return hint[tuple(bound.get(p, p) for p in parameters)]
    return hint


def _from_dataclass(value: Any, hint: Any, bound: dict[Any, Any] | None = None) -> Any:
    """Fields an older writer did not have take their defaults, and fields only a newer
    writer has are ignored: payloads recorded by either version must decode (workflow
    versioning relies on it). Fields with ``init=False`` are computed by the class.
    ``bound`` maps a generic dataclass's type variables to the arguments of its hint."""
    _expect_shape(value, dict, hint)
    fields = [f for f in dataclasses.fields(hint) if f.init]
    missing = [
        f.name
        for f in fields
        if f.name not in value
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise TypeError(f"cannot decode {hint.__qualname__}: {names} missing from the JSON")
    field_hints = _field_hints(hint)
    if bound:
        field_hints = {name: _substitute(h, bound) for name, h in field_hints.items()}
    return hint(**_from_fields(value, [f.name for f in fields], field_hints))


def _from_named_tuple(value: Any, hint: Any) -> Any:
    """Positional, so versions differ at the end: items an older writer did not have take
    their defaults, and items only a newer writer has are ignored, as for dataclasses."""
    _expect_shape(value, list, hint)
    names = hint._fields[: len(value)]
    missing = [f for f in hint._fields[len(value) :] if f not in hint._field_defaults]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        raise TypeError(f"cannot decode {hint.__qualname__}: {listed} missing from the JSON")
    item_hints = _field_hints(hint)
    return hint(*_from_items(value, [item_hints.get(name) for name in names]))


def _from_literal(value: Any, hint: Any, allowed: tuple[Any, ...]) -> Any:
    """One of the literal's values, of the same JSON type (``Literal[1]`` refuses ``true``);
    an enum member is matched by its value, as it was written."""
    for option in allowed:
        plain = option.value if isinstance(option, enum.Enum) else option
        if type(plain) is type(value) and plain == value:
            return option
    raise TypeError(f"{value!r} is none of {hint}")


def _from_typed_dict(value: Any, hint: Any) -> dict[str, Any]:
    """Its keys decoded by their hints; keys it does not declare (a newer writer's) are
    kept, since the result is a dict that can carry them on."""
    _expect_shape(value, dict, hint)
    field_hints = {}
    required = set(hint.__required_keys__)
    for key, declared in _field_hints(hint, include_extras=True).items():
        # Under `from __future__ import annotations` Python 3.11 cannot see NotRequired
        # in the text it keeps, and counts every key as required: the hints tell.
        marker = typing.get_origin(declared)
        if marker is typing.NotRequired:
            required.discard(key)
        elif marker is typing.Required:
            required.add(key)
        wrapped = marker in (typing.NotRequired, typing.Required)
        field_hints[key] = typing.get_args(declared)[0] if wrapped else declared
    missing = sorted(required - value.keys())
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise TypeError(f"cannot decode {hint.__qualname__}: {names} missing from the JSON")
    return _from_fields(value, value.keys(), field_hints)


def _from_key(key: str, hint: Any) -> Any:
    """A dict key back: written as text (`_key`), read as the JSON value it spells when the
    hint is not a string type."""
    if hint is None or hint is Any or hint is str:
        return key
    try:
        return _from_jsonable(key, hint)
    except (TypeError, ValueError, KeyError):
        return _from_jsonable(json.loads(key), hint)


#: One encoder for every payload: `json.dumps` with options builds a new one per call.
#: `allow_nan=False`: what reaches it has been checked, and nothing that is not JSON may leave.
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


class JsonPayloadConverter:
    """JSON with type-hint-guided decoding; `None` travels as a `binary/null` payload,
    top-level bytes as `binary/plain`, a value with nested bytes as
    ``json/plain;bytes=base64``."""

    def to_payload(self, value: Any) -> Payload:
        """Raises `TypeError` naming a value JSON cannot carry and its path (``$.lines[1]``)."""
        if value is None:
            return Payload(NULL_ENCODING, b"")
        if isinstance(value, bytes):
            return Payload(BINARY_ENCODING, value)
        encoding = JSON_ENCODING
        try:
            try:
                plain = _in_bytes_form(False, _to_jsonable, value)
            except _NestedBytesError:
                encoding = JSON_BASE64_BYTES_ENCODING
                plain = _in_bytes_form(True, _to_jsonable, value)
        except _UnconvertibleError as refused:
            raise refused.error() from None
        return Payload(encoding, _JSON.encode(plain).encode())

    def from_payload(self, payload: Payload, type_hint: Any = None) -> Any:
        if payload.encoding == NULL_ENCODING:
            if _admits_none(type_hint):
                return None
            raise _NullRefusedError(type_hint).error()
        if payload.encoding == BINARY_ENCODING:
            return payload.data
        if payload.encoding == JSON_ENCODING:
            as_base64 = False
        elif payload.encoding == JSON_BASE64_BYTES_ENCODING:
            as_base64 = True
        else:
            raise ValueError(f"unknown payload encoding {payload.encoding!r} (missing codec?)")
        try:
            return _in_bytes_form(as_base64, _from_jsonable, json.loads(payload.data), type_hint)
        except _NullRefusedError as refused:
            raise refused.error() from None


class ZlibCodec:
    """Compresses payloads of at least `min_size` bytes; keeps the inner encoding inside."""

    ENCODING = "binary/zlib"

    def __init__(self, min_size: int = 256, level: int = 6) -> None:
        self.min_size = min_size
        self.level = level

    def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if len(p.data) < self.min_size:
                out.append(p)
                continue
            framed = p.encoding.encode() + b"\0" + p.data
            out.append(Payload(self.ENCODING, zlib.compress(framed, self.level)))
        return out

    def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.encoding != self.ENCODING:
                out.append(p)
                continue
            encoding, _, data = zlib.decompress(p.data).partition(b"\0")
            out.append(Payload(encoding.decode(), data))
        return out


@dataclasses.dataclass(frozen=True)
class DataConverter:
    """A payload converter and a codec chain; what every host uses to read user values."""

    payload_converter: PayloadConverter = dataclasses.field(default_factory=JsonPayloadConverter)
    codecs: Sequence[PayloadCodec] = ()

    def encode(self, values: Sequence[Any]) -> tuple[Payload, ...]:
        payloads = []
        for index, value in enumerate(values):
            try:
                payloads.append(self.payload_converter.to_payload(value))
            except Exception as exc:
                if len(values) > 1:  # which argument (or detail) it was, in the traceback
                    exc.add_note(f"in value {index + 1} of {len(values)}")
                raise
        for codec in self.codecs:
            payloads = codec.encode(payloads)
        return tuple(payloads)

    def decode(self, payloads: Sequence[Payload], type_hints: Sequence[Any] = ()) -> list[Any]:
        plain = list(payloads)
        for codec in reversed(self.codecs):
            plain = codec.decode(plain)
        hints = list(type_hints) + [None] * (len(plain) - len(type_hints))
        return [
            self.payload_converter.from_payload(p, h) for p, h in zip(plain, hints, strict=False)
        ]

    def encode_one(self, value: Any) -> Payload:
        return self.encode([value])[0]

    def decode_one(self, payload: Payload | None, type_hint: Any = None) -> Any:
        if payload is None:
            return None
        return self.decode([payload], [type_hint])[0]


def default_converter() -> DataConverter:
    return DataConverter()
