"""Wire forms a demanding reader relies on: sets in an order no process chooses, a null only
where the hint admits None, nested bytes as base64 (and the latin-1 recorded before).

Payloads are recorded in histories, compared and read by other languages, so these tests
pin the bytes as well as the round trip.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from runtime.converter import DataConverter
from runtime.payloads import Payload

C = DataConverter()


def _json(text: str, encoding: str = "json/plain") -> Payload:
    return Payload(encoding, text.encode())


def _data(value: Any) -> bytes:
    return C.encode_one(value).data


# --- sets ------------------------------------------------------------------------------

_SET_IN_A_CHILD = (
    "from runtime.converter import DataConverter; import sys; "
    "sys.stdout.buffer.write(DataConverter().encode_one("
    "{'tags': {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'}}).data)"
)


def test_a_set_of_strings_writes_the_same_bytes_in_every_process() -> None:
    """`str` hashes are salted per process: iteration order differed between workers."""
    written = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        child = subprocess.run(
            [sys.executable, "-c", _SET_IN_A_CHILD], env=env, capture_output=True, check=True
        )
        written.add(child.stdout)
    assert written == {b'{"tags":["alpha","beta","delta","epsilon","gamma","zeta"]}'}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({8, 1, 10}, b"[1,8,10]"),  # by value, not by text ("10" < "8"), not by hash (8, 1)
        (frozenset({8, 1, 2.5, Decimal("-3")}), b'["-3",1,2.5,8]'),
        ({date(2026, 3, 1), date(2025, 1, 9)}, b'["2025-01-09","2026-03-01"]'),
        (
            {uuid.UUID(int=16), uuid.UUID(int=1)},
            b'["00000000-0000-0000-0000-000000000001","00000000-0000-0000-0000-000000000010"]',
        ),
    ],
)
def test_a_set_of_ordered_values_is_written_sorted_by_value(value: Any, text: bytes) -> None:
    assert _data(value) == text


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({Colour.RED, Colour.BLUE}, b'["blue","red"]'),  # plain enums do not compare
        ({8, "a", None}, b'["a",8,null]'),  # by JSON text: '"a"' < '8' < 'null'
        (frozenset({frozenset({2}), frozenset({1, 2}), frozenset({1})}), b"[[1,2],[1],[2]]"),
        (
            {datetime(2026, 1, 1), datetime(2025, 1, 1, tzinfo=UTC)},
            b'["2025-01-01T00:00:00+00:00","2026-01-01T00:00:00"]',  # naive with aware
        ),
    ],
)
def test_a_set_without_a_total_order_is_written_by_json_text(value: Any, text: bytes) -> None:
    """Frozensets' `<` is the subset test, a partial order: sorting by it would depend on
    the order items come in, which is what this fixes."""
    assert _data(value) == text


def test_a_set_in_a_value_round_trips() -> None:
    assert C.decode_one(C.encode_one({"ids": {3, 1, 2}}), dict[str, set[int]]) == {"ids": {1, 2, 3}}
