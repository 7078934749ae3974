"""History events as JSON, for people: ``chronik history tail`` and debugging.

Not a wire format (Avro is); a faithful, readable view. The event kind is the record
name, enums are their values, and a payload's bytes show as UTF-8 text when they are valid
JSON (the default converter's output), else as base64, so nothing is lost or mangled.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from typing import Any

from runtime.events import HistoryEvent
from runtime.payloads import Payload


def payload_to_json(payload: Payload) -> dict[str, str]:
    """``{"encoding", "data"}`` when the bytes are JSON text, else ``{"encoding", "base64"}``."""
    try:
        text = payload.data.decode("utf-8")
        json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return {"encoding": payload.encoding, "base64": base64.b64encode(payload.data).decode()}
    return {"encoding": payload.encoding, "data": text}


def to_jsonable(value: Any) -> Any:
    """Any model value as JSON-compatible data (dicts, lists, strings, numbers, null)."""
    if isinstance(value, Payload):
        return payload_to_json(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def history_event_to_json(event: HistoryEvent) -> dict[str, Any]:
    """One history event as a JSON object: envelope fields, ``type``, then ``attributes``."""
    return {
        "workflow_id": event.workflow_id,
        "run_id": event.run_id,
        "event_id": event.event_id,
        "timestamp_ms": event.timestamp_ms,
        "type": type(event.attributes).__name__,
        "attributes": to_jsonable(event.attributes),
    }
