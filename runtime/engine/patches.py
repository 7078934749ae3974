"""Patch markers: how `workflow.patched` and `workflow.deprecate_patch` are recorded.

Both record a `MarkerRecorded` named ``patch`` whose ``marker_id`` is the patch id. A
marker recorded by `deprecate_patch` says so in its details, with one JSON payload
``{"deprecated": true}``, rather than in a new field of the Avro record: during a rolling
deploy a worker still running `patched()` code must read the history a newer worker
wrote, and a reader only knows the schema versions it shipped with (`topics.registry`).
Such a worker reads the marker as the patch it is and takes the new branch, which is
what the run took.

The flag matters to replay in one case: code that no longer calls `deprecate_patch` at
all meets the marker in a history recorded while it did. That marker is skipped, as
Temporal does; a marker recorded by `patched()` is not: only the code that recorded a
marker can declare it removable, and a missing call may as well be a mistake.
"""

from __future__ import annotations

import json

from runtime.events import EventAttributes, MarkerRecorded
from runtime.payloads import Payload

PATCH_MARKER = "patch"

#: The detail that flags a deprecated patch's marker; JSON, so any reader of the
#: public Avro contract can tell without our converter.
_DEPRECATED = Payload("json/plain", b'{"deprecated":true}')


def patch_marker(seq: int, patch_id: str, *, deprecated: bool) -> MarkerRecorded:
    """The marker a run records the first time it takes patch ``patch_id``'s new branch."""
    return MarkerRecorded(seq, PATCH_MARKER, patch_id, (_DEPRECATED,) if deprecated else ())


def is_patch_marker(attrs: EventAttributes, patch_id: str | None = None) -> bool:
    """Whether ``attrs`` is a patch marker (of ``patch_id``, when given)."""
    return (
        isinstance(attrs, MarkerRecorded)
        and attrs.name == PATCH_MARKER
        and (patch_id is None or attrs.marker_id == patch_id)
    )


def is_deprecated_patch_marker(attrs: EventAttributes) -> bool:
    """Whether ``attrs`` is a patch marker recorded by `deprecate_patch`.

    Details that are not the flag (another writer's, undecodable) read as not deprecated:
    the marker then has to be matched, which is the strict answer.
    """
    if not isinstance(attrs, MarkerRecorded) or attrs.name != PATCH_MARKER:
        return False
    for detail in attrs.details:
        if detail.encoding != _DEPRECATED.encoding:
            continue
        try:
            value = json.loads(detail.data)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("deprecated") is True:
            return True
    return False
