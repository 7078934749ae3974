"""History as JSON: the portable file format `Replayer` reads and `chronik` can export.

Every event becomes ``{"workflow_id", "run_id", "event_id", "timestamp_ms", "type",
"attributes"}``; bytes are base64. Decoding is driven by the dataclasses' type hints, so
the format follows `runtime.events` without a hand-written mapping per event.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

from runtime import events as ev
from runtime.events import HistoryEvent

_EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(ev.EventAttributes)}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
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
        "attributes": _encode(event.attributes),
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
    data = json.loads(text)
    items = data["events"] if isinstance(data, dict) else data
    return [event_from_dict(item) for item in items]
