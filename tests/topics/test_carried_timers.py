"""The timer changes a history record carries in its headers (`topics.carried_timers`)."""

from __future__ import annotations

import pytest

from runtime.messages import DurableTimer
from topics import carried_timers, serde
from topics.errors import DecodeError


def test_set_and_clear_headers_read_back_in_order_and_other_headers_are_skipped() -> None:
    timer = DurableTimer("w", "run-1", "activity:1:1:start_to_close", 31_000)
    headers = [
        ("traceparent", b"00-abc"),
        carried_timers.set_header(timer),
        carried_timers.clear_header("w", "retry:1:2"),
    ]

    assert carried_timers.changes(headers) == [
        ("w", "activity:1:1:start_to_close", 31_000, serde.encode_timer(timer)),
        ("w", "retry:1:2", 0, None),
    ]


def test_the_header_values_are_the_timers_topics_avro_records() -> None:
    timer = DurableTimer("w", "run-1", "activity:1:1:heartbeat", 5)

    assert carried_timers.set_header(timer)[1] == serde.encode_timer(timer)
    key = carried_timers.clear_header("w", "activity:1:1:heartbeat")[1]
    assert key == serde.encode_timer_key("w", "activity:1:1:heartbeat")


def test_a_corrupt_timer_header_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        carried_timers.changes([(carried_timers.SET, b"\x00garbage")])


def test_the_headers_of_many_records_decode_together_each_in_its_place() -> None:
    first = DurableTimer("a", "run-1", "activity:1:1:start_to_close", 10)
    second = DurableTimer("b", "run-1", "activity:2:1:heartbeat", 20)
    headers = [
        carried_timers.set_header(first),
        ("traceparent", b"00-abc"),
        carried_timers.clear_header("a", "activity:1:1:start_to_close"),
        carried_timers.set_header(second),
    ]
    where = [("h", 0, 1), ("h", 0, 2), ("h", 0, 2), ("h", 1, 7)]

    assert carried_timers.decode_changes(headers, where) == [
        ("a", "activity:1:1:start_to_close", 10, serde.encode_timer(first)),
        None,
        ("a", "activity:1:1:start_to_close", 0, None),
        ("b", "activity:2:1:heartbeat", 20, serde.encode_timer(second)),
    ]


def test_a_corrupt_header_among_many_names_its_record() -> None:
    good = carried_timers.set_header(DurableTimer("a", "run-1", "t", 10))
    headers = [good, (carried_timers.CLEAR, b"\x00garbage"), good]

    with pytest.raises(DecodeError) as raised:
        carried_timers.decode_changes(headers, [("h", 0, 1), ("h", 3, 9), ("h", 0, 4)])
    assert raised.value.location == "h[3]@9"
