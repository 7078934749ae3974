"""Keep every released schema readable: snapshot the current schemas into ``avro/versions``.

Run ``python -m topics.versions`` after changing any ``avro/*.avsc`` file. It writes the
self-contained schema of each top-level record as ``avro/versions/<name>/<fingerprint>.avsc``
(existing snapshots are never touched), so readers keep resolving records written before
the change. A test fails while the current schemas are not snapshotted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from topics.registry import VERSIONS_DIR
from topics.schemas import current


def snapshot_path(name: str, fingerprint: bytes, versions_dir: Path = VERSIONS_DIR) -> Path:
    """Where the snapshot of one schema version lives."""
    return versions_dir / name / f"{fingerprint.hex()}.avsc"


def snapshot(versions_dir: Path = VERSIONS_DIR) -> list[Path]:
    """Write the snapshots that are missing; returns the files written."""
    written = []
    for name, entry in current().items():
        path = snapshot_path(name, entry.fingerprint, versions_dir)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry.schema, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    """Entry point of ``python -m topics.versions``."""
    for path in snapshot():
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
