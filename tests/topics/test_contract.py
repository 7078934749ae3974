"""The model (runtime dataclasses) and the contract (avro/*.avsc) can never drift apart.

Every dataclass of the model has an Avro record of the same name with the same fields in
the same order, the Avro type its annotation implies, and a default exactly where Python
has one. Every record and field-less enum carries a doc. The current schemas are
snapshotted in avro/versions, so older records stay readable after a change.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from typing import Any

import pytest

from runtime import events, messages, payloads
from topics import keys
from topics.registry import VERSIONS_DIR
from topics.schemas import TOP_LEVEL, current, load_definitions
from topics.versions import current_path, snapshot_path

DEFINITIONS = load_definitions()


def _model_classes() -> list[type]:
    found = []
    for module in (payloads, events, messages):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and dataclasses.is_dataclass(obj):
                found.append(obj)
    return found


def _model_enums() -> list[type[enum.Enum]]:
    return [
        obj
        for module in (events, messages)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and issubclass(obj, enum.Enum)
    ]


def _resolve(schema: Any) -> Any:
    if isinstance(schema, str) and schema.startswith("chronik."):
        return DEFINITIONS[schema]
    return schema


def _expected_matches(tp: Any, schema: Any) -> bool:
    """Whether the Avro ``schema`` is the mapping of the Python annotation ``tp``."""
    schema = _resolve(schema)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if not isinstance(schema, list) or len(schema) != len(members):
            return False
        if type(None) in members and schema[0] != "null":
            return False  # null first, so that a null default is valid Avro
        branches = [b for b in schema if b != "null"]
        present = [m for m in members if m is not type(None)]
        return all(_expected_matches(m, b) for m, b in zip(present, branches, strict=True))
    simple = {str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes"}
    if tp in simple:
        return bool(schema == simple[tp])
    if origin is tuple:
        return (
            isinstance(schema, dict)
            and schema["type"] == "array"
            and _expected_matches(typing.get_args(tp)[0], schema["items"])
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return (
            isinstance(schema, dict)
            and schema.get("type") == "enum"
            and schema["name"] == tp.__name__
            and schema["symbols"] == [m.value for m in tp]
        )
    if isinstance(tp, type):
        return isinstance(schema, dict) and schema.get("name") == tp.__name__
    return False


def _fields_of(cls: type) -> list[tuple[str, Any, bool, Any]]:
    hints = typing.get_type_hints(cls)
    if dataclasses.is_dataclass(cls):
        return [
            (f.name, hints[f.name], f.default is not dataclasses.MISSING, f.default)
            for f in dataclasses.fields(cls)
        ]
    defaults = getattr(cls, "_field_defaults", {})
    return [(n, hints[n], n in defaults, defaults.get(n)) for n in cls._fields]  # type: ignore[attr-defined]


CLASSES = [*_model_classes(), keys.HistoryKey, keys.TimerKey]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_model_class_has_the_same_avro_record(cls: type) -> None:
    record = DEFINITIONS.get(f"chronik.{cls.__name__}")
    assert record is not None, f"avro/ has no record chronik.{cls.__name__}"
    assert record["type"] == "record"
    avro_fields = record["fields"]
    python_fields = _fields_of(cls)
    assert [f["name"] for f in avro_fields] == [f[0] for f in python_fields]
    for avro_field, (name, tp, has_default, default) in zip(
        avro_fields, python_fields, strict=True
    ):
        assert _expected_matches(tp, avro_field["type"]), f"{cls.__name__}.{name}: type differs"
        assert ("default" in avro_field) == has_default, f"{cls.__name__}.{name}: default"
        if has_default:
            expected = default.value if isinstance(default, enum.Enum) else default
            expected = list(expected) if isinstance(expected, tuple) else expected
            assert avro_field["default"] == expected, f"{cls.__name__}.{name}: default value"


@pytest.mark.parametrize("enum_cls", _model_enums(), ids=lambda c: c.__name__)
def test_every_enum_has_the_same_avro_symbols(enum_cls: type[enum.Enum]) -> None:
    schema = DEFINITIONS[f"chronik.{enum_cls.__name__}"]
    assert schema["symbols"] == [m.value for m in enum_cls]


def test_every_avro_record_is_a_model_class_or_an_envelope() -> None:
    model = {f"chronik.{cls.__name__}" for cls in CLASSES} | {
        f"chronik.{e.__name__}" for e in _model_enums()
    }
    envelopes = {"chronik.InboxEnvelope", "chronik.TaskEnvelope"}
    assert set(DEFINITIONS) == model | envelopes


def test_envelope_unions_list_exactly_the_model_unions() -> None:
    inbox = DEFINITIONS["chronik.InboxEnvelope"]["fields"][0]["type"]
    assert [b["name"] for b in inbox] == [
        c.__name__ for c in typing.get_args(messages.InboxMessage)
    ]
    task = DEFINITIONS["chronik.TaskEnvelope"]["fields"][0]["type"]
    assert [b["name"] for b in task] == [c.__name__ for c in typing.get_args(messages.TaskRecord)]


def test_every_named_type_is_documented() -> None:
    undocumented = [name for name, schema in DEFINITIONS.items() if not schema.get("doc")]
    assert undocumented == []


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_current_schema_is_snapshotted_so_it_stays_readable(name: str) -> None:
    entry = current()[name]
    path = snapshot_path(name, entry.fingerprint, VERSIONS_DIR)
    assert path.exists(), f"{name} changed: run `python -m topics.versions` and commit {path}"
    # What another language reads to know which of the fingerprint-named files is newest.
    marker = current_path(name, VERSIONS_DIR)
    assert marker.read_text(encoding="utf-8") == f"{entry.fingerprint.hex()}\n", (
        f"{marker} does not name the current {name}: run `python -m topics.versions`"
    )
