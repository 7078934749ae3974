"""The Avro contract as loaded from ``avro/*.avsc``: one self-contained schema per record type.

The ``.avsc`` files define every named type once and refer to it by full name from the
other files. Kafka readers in other languages, fingerprints and fastavro's schema
resolution all need a *self-contained* schema per top-level record, so this module composes
one: references are inlined at their first use, in the order of :data:`FILES` (a file
refers only to names defined by files before it).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

#: The package's schema directory: next to ``topics/`` in a checkout and in the wheel.
AVRO_DIR = Path(__file__).resolve().parent.parent / "avro"

#: Every contract file, dependencies first.
FILES = (
    "payload.avsc",
    "failure.avsc",
    "retry_policy.avsc",
    "parent_ref.avsc",
    "history_key.avsc",
    "history_event.avsc",
    "status.avsc",
    "inbox_message.avsc",
    "activity_task.avsc",
    "timer_key.avsc",
    "durable_timer.avsc",
    "reply.avsc",
)

#: The records written to topics as whole keys or values; each gets a fingerprint.
TOP_LEVEL = (
    "chronik.HistoryKey",
    "chronik.HistoryEvent",
    "chronik.InboxEnvelope",
    "chronik.TaskEnvelope",
    "chronik.TimerKey",
    "chronik.DurableTimer",
    "chronik.StatusRecord",
    "chronik.Reply",
)

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})

Schema = Any
"""A JSON schema as Python data (``dict``, ``list`` or ``str``)."""


@dataclass(frozen=True, slots=True)
class VersionedSchema:
    """One self-contained writer/reader schema with its identity on the wire."""

    name: str
    schema: Schema  # self-contained JSON form, docs included
    parsed: Schema  # fastavro's parsed form, what the reader and writer take
    fingerprint: bytes  # CRC-64-AVRO of the parsing canonical form, little-endian


def fingerprint64(schema: Schema) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a self-contained schema, as Avro writes it."""
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def versioned(schema: Schema) -> VersionedSchema:
    """Parse a self-contained schema once and compute its fingerprint."""
    parsed = parse_schema(copy.deepcopy(schema), named_schemas={})
    return VersionedSchema(
        name=_fullname(schema, None),
        schema=schema,
        parsed=parsed,
        fingerprint=fingerprint64(schema),
    )


def _fullname(schema: Mapping[str, Any], namespace: str | None) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def collect_definitions(schema: Schema, namespace: str | None, into: dict[str, Schema]) -> None:
    """Record every named type a schema defines under its full name (nested ones too)."""
    if isinstance(schema, list):
        for branch in schema:
            collect_definitions(branch, namespace, into)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            full = _fullname(schema, namespace)
            if full in into:
                raise ValueError(f"Avro type {full} is defined twice")
            into[full] = schema
            namespace = full.rpartition(".")[0] or None
        if kind in ("record", "error"):
            for field in schema["fields"]:
                collect_definitions(field["type"], namespace, into)
        elif kind == "array":
            collect_definitions(schema["items"], namespace, into)
        elif kind == "map":
            collect_definitions(schema["values"], namespace, into)


def compose(name: str, definitions: Mapping[str, Schema]) -> Schema:
    """A self-contained copy of ``name``: each referenced type inlined at its first use."""
    seen: set[str] = set()

    def walk(schema: Schema, namespace: str | None) -> Schema:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema
            full = schema if "." in schema else f"{namespace}.{schema}"
            if full in seen:
                return full
            if full not in definitions:
                raise ValueError(f"Avro type {full} is referenced but never defined")
            return walk(definitions[full], namespace)
        if isinstance(schema, list):
            return [walk(branch, namespace) for branch in schema]
        kind = schema.get("type")
        out = dict(schema)
        if kind in _NAMED:
            full = _fullname(schema, namespace)
            if full in seen:  # defined inline in its file, but already inlined above
                return full
            seen.add(full)
            # Inlined far from its file, the definition must carry its own namespace.
            out["name"], out["namespace"] = full.rpartition(".")[2], full.rpartition(".")[0]
            namespace = out["namespace"]
        if kind in ("record", "error"):
            out["fields"] = [
                {**field, "type": walk(field["type"], namespace)} for field in schema["fields"]
            ]
        elif kind == "array":
            out["items"] = walk(schema["items"], namespace)
        elif kind == "map":
            out["values"] = walk(schema["values"], namespace)
        return out

    return walk(name, None)


def load_definitions(avro_dir: Path = AVRO_DIR) -> dict[str, Schema]:
    """Every named type of the contract files, by full name."""
    definitions: dict[str, Schema] = {}
    for file in FILES:
        with (avro_dir / file).open(encoding="utf-8") as fh:
            collect_definitions(json.load(fh), None, definitions)
    return definitions


@cache
def current() -> Mapping[str, VersionedSchema]:
    """The schemas this code writes with, by full record name; loaded and parsed once."""
    definitions = load_definitions()
    return {name: versioned(compose(name, definitions)) for name in TOP_LEVEL}
