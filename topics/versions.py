"""Keep every released schema readable: snapshot the current schemas into ``avro/versions``.

Run ``python -m topics.versions`` after changing any ``avro/*.avsc`` file. It writes the
self-contained schema of each top-level record as ``avro/versions/<name>/<fingerprint>.avsc``
(existing snapshots are never touched), so readers keep resolving records written before
the change, and names the current one in ``avro/versions/<name>/CURRENT`` (the fingerprint,
one line): file names are fingerprints, so without it a producer or reader of another
language could not tell the newest version from the oldest. A test fails while the current
schemas are not snapshotted or ``CURRENT`` names another.
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


CURRENT_FILE = "CURRENT"


def current_path(name: str, versions_dir: Path = VERSIONS_DIR) -> Path:
    """The file naming the current version of one record (its fingerprint in hex)."""
    return versions_dir / name / CURRENT_FILE


def snapshot(versions_dir: Path = VERSIONS_DIR) -> list[Path]:
    """Write the snapshots that are missing and each ``CURRENT``; returns the files written."""
    written = []
    for name, entry in current().items():
        path = snapshot_path(name, entry.fingerprint, versions_dir)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(entry.schema, indent=2) + "\n", encoding="utf-8")
            written.append(path)
        marker = current_path(name, versions_dir)
        line = entry.fingerprint.hex() + "\n"
        if not marker.exists() or marker.read_text(encoding="utf-8") != line:
            marker.write_text(line, encoding="utf-8")
            written.append(marker)
    return written


def main() -> None:
    """Entry point of ``python -m topics.versions``."""
    for path in snapshot():
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
