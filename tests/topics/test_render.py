"""The JSON view of history events printed by ``chronik history tail``."""

from __future__ import annotations

import base64
import json

from runtime.events import ActivityFailed, HistoryEvent, WorkflowStarted
from runtime.payloads import Failure, Payload
from topics.serde import history_event_to_json


def test_json_payloads_show_as_text_and_binary_as_base64() -> None:
    event = HistoryEvent("wf", "run", 1, 5, WorkflowStarted(
        "T", "q", (Payload("json/plain", b'{"a": 1}'), Payload("binary/zlib", b"\xff\x00")), "r"
    ))  # fmt: skip
    rendered = json.loads(json.dumps(history_event_to_json(event)))
    assert rendered["type"] == "WorkflowStarted"
    assert rendered["event_id"] == 1
    first, second = rendered["attributes"]["input"]
    assert first == {"encoding": "json/plain", "data": '{"a": 1}'}
    assert second == {"encoding": "binary/zlib", "base64": base64.b64encode(b"\xff\x00").decode()}


def test_failures_render_with_their_causes() -> None:
    failure = Failure("outer", cause=Failure("inner", kind="timeout"))
    event = HistoryEvent("wf", "run", 2, 5, ActivityFailed(1, 3, failure))
    rendered = history_event_to_json(event)["attributes"]
    assert rendered["failure"]["cause"]["message"] == "inner"
    assert rendered["failure"]["cause"]["cause"] is None
