"""The one JSON form of history events: printed by `chronik history tail`, read by Replayer."""

from __future__ import annotations

import base64
import json

from runtime.events import ActivityFailed, HistoryEvent, WorkflowCompleted, WorkflowStarted
from runtime.history_json import event_to_dict, history_from_json, history_to_json
from runtime.payloads import Failure, Payload

STARTED = HistoryEvent(
    "wf",
    "run",
    1,
    5,
    WorkflowStarted(
        "T", "q", (Payload("json/plain", b'{"a": 1}'), Payload("binary/zlib", b"\xff\x00")), "r"
    ),
)
FAILED = HistoryEvent(
    "wf",
    "run",
    2,
    6,
    ActivityFailed(1, 3, Failure("outer", cause=Failure("inner", kind="timeout"))),
)
DONE = HistoryEvent("wf", "run", 3, 7, WorkflowCompleted(None))


def test_json_payloads_show_as_text_and_binary_as_base64() -> None:
    rendered = json.loads(json.dumps(event_to_dict(STARTED)))
    assert rendered["type"] == "WorkflowStarted"
    assert rendered["event_id"] == 1
    first, second = rendered["attributes"]["input"]
    assert first == {"encoding": "json/plain", "data": '{"a": 1}'}
    assert second == {"encoding": "binary/zlib", "base64": base64.b64encode(b"\xff\x00").decode()}


def test_failures_render_with_their_causes() -> None:
    rendered = event_to_dict(FAILED)["attributes"]
    assert rendered["failure"]["cause"]["message"] == "inner"
    assert rendered["failure"]["cause"]["cause"] is None


def test_document_and_json_lines_both_read_back_to_the_same_events() -> None:
    history = [STARTED, FAILED, DONE]
    assert history_from_json(history_to_json(history)) == history
    lines = "".join(json.dumps(event_to_dict(event)) + "\n" for event in history)
    assert history_from_json(lines) == history
    assert history_from_json(json.dumps(event_to_dict(DONE))) == [DONE]
