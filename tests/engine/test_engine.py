"""The pure engine driven directly: determinism, duplicates, the converter and codecs."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runtime import ZlibCodec, workflow
from runtime.converter import DataConverter
from runtime.engine import WorkflowInstance, WorkflowRegistry
from runtime.events import TimerFired
from runtime.messages import (
    ActivityCompletedReport,
    ActivityTask,
    StartAccepted,
    StartWorkflow,
    TimerFiredReport,
)


@workflow.defn
async def sleeper(n: int) -> int:
    await workflow.sleep(timedelta(seconds=10))
    value: int = await workflow.execute_activity(
        "double", n, start_to_close_timeout=timedelta(seconds=5)
    )
    return value + int(workflow.random().randint(0, 0))


def _start(request_id: str = "r1") -> StartWorkflow:
    return StartWorkflow(
        "w", "sleeper", "q", DataConverter().encode([21]), request_id, reply_to="c"
    )


def test_same_inputs_give_same_transitions_and_duplicates_are_ignored() -> None:
    registry = WorkflowRegistry([sleeper])
    a = WorkflowInstance.restore("w", [], registry)
    b = WorkflowInstance.restore("w", [], registry)
    ta, tb = a.handle(_start(), 1000), b.handle(_start(), 1000)
    assert ta.events == tb.events
    assert ta.timers == tb.timers and len(ta.timers) == 1
    run_id = a.current_run_id
    assert run_id is not None
    dup = a.handle(_start(), 1001)
    assert dup.events == [] and dup.replies[0].body == StartAccepted(run_id, created=False)
    timer = ta.timers[0]
    fired = a.handle(
        TimerFiredReport("w", run_id, timer.timer_id, timer.fire_at_ms), timer.fire_at_ms
    )
    assert isinstance(fired.events[0].attributes, TimerFired)
    (task,) = fired.tasks
    assert isinstance(task, ActivityTask)
    again = a.handle(
        TimerFiredReport("w", run_id, timer.timer_id, timer.fire_at_ms), timer.fire_at_ms + 1
    )
    assert again.events == []
    stale = a.handle(ActivityCompletedReport("w", run_id, task.seq, task.attempt + 1, None), 20_000)
    assert stale.events == []
    result = DataConverter().encode_one(42)
    done = a.handle(ActivityCompletedReport("w", run_id, task.seq, task.attempt, result), 20_000)
    assert done.status is not None and done.status.status == "completed"
    # A restored instance is the live one: same history, same next decisions.
    restored = WorkflowInstance.restore("w", a.history, registry)
    assert restored.status() == a.status()


class Color(enum.Enum):
    RED = "red"


@dataclass
class Order:
    id: str
    placed: datetime
    color: Color
    lines: list[int]


def test_json_converter_round_trips_dataclasses_datetimes_and_enums() -> None:
    conv = DataConverter()
    order = Order("o-1", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), Color.RED, [1, 2])
    (payload,) = conv.encode([order])
    assert payload.encoding == "json/plain"
    assert conv.decode([payload], [Order]) == [order]
    assert conv.decode_one(conv.encode_one(None)) is None


def test_zlib_codec_compresses_large_payloads_and_is_transparent() -> None:
    conv = DataConverter(codecs=[ZlibCodec(min_size=64)])
    big, small = "x" * 10_000, "y"
    payloads = conv.encode([big, small])
    assert payloads[0].encoding == ZlibCodec.ENCODING and len(payloads[0].data) < 200
    assert payloads[1].encoding == "json/plain"
    assert conv.decode(payloads, [str, str]) == [big, small]
