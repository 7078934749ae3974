"""History as JSON: what `chronik history tail` prints and what `Replayer` reads.

One format for people and for tools, so a production history captured with
``chronik history tail --workflow ID --from-beginning > history.jsonl`` replays as it is.
Every event becomes ``{"workflow_id", "run_id", "event_id", "timestamp_ms", "type",
"attributes"}``. A payload shows as ``{"encoding", "data": <text>}`` when its bytes are
JSON text (the default converter's output), else ``{"encoding", "base64"}``; other bytes
are base64 and enums their values. Decoding is driven by the dataclasses' type hints, so
the format follows `runtime.events` without a hand-written mapping per event.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

from runtime import events as ev
from runtime.events import HistoryEvent
from runtime.payloads import Payload

_EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(ev.EventAttributes)}


def _payload_to_json(payload: Payload) -> dict[str, str]:
    try:
        text = payload.data.decode("utf-8")
        json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return {"encoding": payload.encoding, "base64": base64.b64encode(payload.data).decode()}
    return {"encoding": payload.encoding, "data": text}


def _payload_from_json(value: dict[str, str]) -> Payload:
    if "base64" in value:
        return Payload(value["encoding"], base64.b64decode(value["base64"]))
    return Payload(value["encoding"], value["data"].encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """A model value (an event's attributes, a status record, a description) as JSON
    types, payloads in the form above; what the CLI prints of every model value."""
    if isinstance(value, Payload):
        return _payload_to_json(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(ev))


def _decode(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(value, inner[0]) if len(inner) == 1 else value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_decode(v, item) for v in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is Payload:
        return _payload_from_json(value)
    if hint is bytes:
        return base64.b64decode(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        h = _hints(hint)
        return hint(**{k: _decode(v, h[k]) for k, v in value.items() if k in h})
    return value


def event_to_dict(event: HistoryEvent) -> dict[str, Any]:
    return {
        "workflow_id": event.workflow_id,
        "run_id": event.run_id,
        "event_id": event.event_id,
        "timestamp_ms": event.timestamp_ms,
        "type": type(event.attributes).__name__,
        "attributes": to_jsonable(event.attributes),
    }


def event_from_dict(data: dict[str, Any]) -> HistoryEvent:
    cls = _EVENT_TYPES[data["type"]]
    attributes = _decode(data["attributes"], cls)
    return HistoryEvent(
        data["workflow_id"], data["run_id"], data["event_id"], data["timestamp_ms"], attributes
    )


def history_to_json(events: Sequence[HistoryEvent], *, indent: int | None = 2) -> str:
    return json.dumps({"events": [event_to_dict(e) for e in events]}, indent=indent)


def history_from_json(text: str) -> list[HistoryEvent]:
    """Events from a JSON document (``{"events": [...]}`` or a list) or JSON lines."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict) and "events" not in data:
        data = [data]  # JSON lines holding a single event
    items = data["events"] if isinstance(data, dict) else data
    return [event_from_dict(item) for item in items]
