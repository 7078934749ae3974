"""Which writer schema a fingerprint stands for: every version this package can read.

A reader meets records written by older (and, during a rolling deploy, newer-but-known)
code. The current schemas are always known; earlier versions are shipped as
self-contained snapshots in ``avro/versions/<full name>/<fingerprint>.avsc`` (see
:mod:`topics.versions`), and tests or tools may register more.
"""

from __future__ import annotations

import json
import threading
from functools import cache
from pathlib import Path

from topics.schemas import AVRO_DIR, Schema, VersionedSchema, current, versioned

VERSIONS_DIR = AVRO_DIR / "versions"


class SchemaRegistry:
    """Fingerprint -> writer schema. Thread-safe; registration is rare, lookup is hot."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, VersionedSchema] = {}
        self._lock = threading.Lock()

    def register(self, schema: Schema | VersionedSchema) -> VersionedSchema:
        """Make a writer schema known; returns it parsed, with its fingerprint."""
        entry = schema if isinstance(schema, VersionedSchema) else versioned(schema)
        with self._lock:
            known = self._by_fingerprint.setdefault(entry.fingerprint, entry)
        return known

    def get(self, fingerprint: bytes) -> VersionedSchema | None:
        """The writer schema of ``fingerprint``, or None when this package never saw it."""
        return self._by_fingerprint.get(fingerprint)

    def versions(self, name: str) -> list[VersionedSchema]:
        """Every known version of the record ``name`` (full name)."""
        return [v for v in self._by_fingerprint.values() if v.name == name]


def load_versions(registry: SchemaRegistry, versions_dir: Path = VERSIONS_DIR) -> int:
    """Register every shipped snapshot; returns how many files were read."""
    count = 0
    for path in sorted(versions_dir.glob("*/*.avsc")):
        with path.open(encoding="utf-8") as fh:
            entry = registry.register(json.load(fh))
        if entry.name != path.parent.name or entry.fingerprint.hex() != path.stem:
            raise ValueError(f"{path} holds {entry.name} {entry.fingerprint.hex()}")
        count += 1
    return count


@cache
def default_registry() -> SchemaRegistry:
    """The process-wide registry: current schemas plus every shipped version."""
    registry = SchemaRegistry()
    for entry in current().values():
        registry.register(entry)
    load_versions(registry)
    return registry
