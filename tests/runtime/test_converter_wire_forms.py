"""Wire forms a demanding reader relies on: sets in an order no process chooses, a null only
where the hint admits None, nested bytes as base64 (and the latin-1 recorded before).

Payloads are recorded in histories, compared and read by other languages, so these tests
pin the bytes as well as the round trip.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict

import pytest

from runtime.converter import DataConverter, JsonPayloadConverter, ZlibCodec
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
        ({b"\xff", b"\x00"}, b'["AA==","/w=="]'),
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


# --- null ------------------------------------------------------------------------------


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 0
    note: str | None = None


class Row(TypedDict):
    count: int


Count = NewType("Count", int)


@pytest.mark.parametrize(
    ("text", "hint", "where", "named"),
    [
        ("null", int, r"\$", "int"),
        ('{"sku":"a","qty":null}', Item, r"\$\.qty", "int"),
        ('{"sku":null}', Item, r"\$\.sku", "str"),
        ("[1,null]", list[int], r"\$\[1\]", "int"),
        ('[1,"a",null]', tuple[int, str, float], r"\$\[2\]", "float"),
        ('{"a":1,"b c":null}', dict[str, int], r"\$\['b c'\]", "int"),
        ('{"count":null}', Row, r"\$\.count", "int"),
        ('{"rows":[{"sku":"a"},{"sku":"b","qty":null}]}', dict[str, list[Item]], "", "int"),
        ("null", list[int], r"\$", r"list\[int\]"),
        ("null", Item, r"\$", "Item"),
        ("null", Literal["a", "b"], r"\$", "Literal"),
        ("[null]", list[Count], r"\$\[0\]", ".*Count"),
    ],
)
def test_a_null_the_hint_does_not_admit_is_refused_naming_path_and_hint(
    text: str, hint: Any, where: str, named: str
) -> None:
    """`x: int` took a null and handed the code a None its type says cannot be there."""
    where = where or r"\$\.rows\[1\]\.qty"
    with pytest.raises(TypeError, match=rf"cannot decode null at {where} as {named}"):
        C.decode_one(_json(text), hint)


def test_a_top_level_none_is_refused_where_the_hint_does_not_admit_it() -> None:
    """None travels as `binary/null`, a hint that does not admit it refuses it as well."""
    with pytest.raises(TypeError, match=r"cannot decode null at \$ as int"):
        C.decode_one(C.encode_one(None), int)
    assert C.decode_one(C.encode_one(None), int | None) is None


@pytest.mark.parametrize(
    "hint",
    [
        None,
        Any,
        object,
        type(None),
        int | None,
        Optional[int],  # noqa: UP045 - the spelling under test
        Literal["a", None],
        Annotated[int | None, "meta"],
    ],
)
def test_a_null_is_none_where_the_hint_admits_it(hint: Any) -> None:
    assert C.decode_one(_json("null"), hint) is None
    assert C.decode_one(_json("[null]"), list[hint]) == [None]


def test_a_field_default_of_none_does_not_admit_a_null() -> None:
    """The default stands in for a field the JSON lacks, not for a null it sends."""
    assert C.decode_one(_json('{"sku":"a"}'), Item) == Item("a")
    assert C.decode_one(_json('{"sku":"a","note":null}'), Item) == Item("a")
    with pytest.raises(TypeError, match=r"\$\.qty as int"):
        C.decode_one(_json('{"sku":"a","qty":null}'), Item)


def test_a_union_member_refusing_a_null_lets_the_next_member_try() -> None:
    assert C.decode_one(_json('{"sku":null}'), Item | dict[str, Any]) == {"sku": None}


# --- nested bytes ----------------------------------------------------------------------


@dataclasses.dataclass
class Blob:
    name: str
    data: bytes


def test_nested_bytes_travel_as_base64_under_an_encoding_that_says_so() -> None:
    """Base64 is how protobuf's JSON, Go, Java and .NET write bytes in JSON; latin-1
    text (the form before) is something no reader in another language expects."""
    payload = C.encode_one(Blob("k", b"\x00\xff\xfe"))
    assert payload == Payload("json/plain;bytes=base64", b'{"data":"AP/+","name":"k"}')
    assert C.decode_one(payload, Blob) == Blob("k", b"\x00\xff\xfe")


def test_a_value_without_nested_bytes_stays_json_plain() -> None:
    assert C.encode_one(Blob("k", b"")).encoding == "json/plain;bytes=base64"
    assert C.encode_one({"name": "k"}) == Payload("json/plain", b'{"name":"k"}')


def test_nested_bytes_recorded_before_as_latin1_still_decode() -> None:
    """``"abcd"`` is latin-1 for b"abcd" and base64 for b"i\\xb7\\x1d": only the encoding
    name tells a recorded payload from a new one."""
    old = _json('{"name":"k","data":"abcd\\u00ff"}')
    assert C.decode_one(old, Blob) == Blob("k", b"abcd\xff")


@pytest.mark.parametrize("value", [b"", b"abcd", bytes(range(256))])
def test_nested_bytes_of_every_kind_round_trip(value: bytes) -> None:
    assert C.decode_one(C.encode_one([value]), list[bytes]) == [value]
    assert C.decode_one(C.encode_one({value: 1}), dict[bytes, int]) == {value: 1}
    codec = DataConverter(codecs=[ZlibCodec(min_size=0)])
    assert codec.decode_one(codec.encode_one(Blob("z", value)), Blob) == Blob("z", value)


def test_text_that_is_no_base64_is_refused_under_the_base64_encoding() -> None:
    with pytest.raises(ValueError, match="not base64"):
        C.decode_one(_json('["ab!="]', "json/plain;bytes=base64"), list[bytes])
    assert C.decode_one(_json('["ab!"]', "json/plain;bytes=base64"), list[bytes | str]) == ["ab!"]


def test_a_nested_converter_call_keeps_its_own_bytes_form() -> None:
    """A pydantic serializer or validator may call a converter from inside a walk; the
    inner call must not write or read in the outer one's form."""
    inner = JsonPayloadConverter()

    @dataclasses.dataclass
    class Wrapped:
        raw: bytes

        def __post_init__(self) -> None:  # runs inside the outer base64 decode
            self.inner = inner.from_payload(_json('{"data":"abcd","name":"i"}'), Blob)

    outer = C.encode_one({"raw": b"\x01"})
    assert C.decode_one(outer, Wrapped).inner == Blob("i", b"abcd")


# --- integers --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**53 + 1, -(2**63) - 1, 2**64 + 1])
def test_an_int_beyond_a_double_travels_as_an_exact_number(value: int) -> None:
    """Other languages reading doubles round it (docs/engine.md says how to read it);
    writing text instead would read back as a str wherever there is no hint."""
    assert C.encode_one({"n": value}).data == b'{"n":%d}' % value
    assert C.decode_one(C.encode_one({"n": value})) == {"n": value}
