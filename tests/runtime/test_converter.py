"""The JSON payload converter on its own: what a value becomes on the wire and what comes back.

Payloads outlive the code that wrote them (histories replay after a deploy) and are read by
other languages, so each test pins the wire form as well as the round trip.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import uuid
from collections.abc import Iterable, Mapping, MutableSequence, Sequence, Set
from datetime import datetime, timedelta
from decimal import Decimal
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    NewType,
    NotRequired,
    TypedDict,
    TypeVar,
)

import pydantic
import pytest

from runtime.converter import DataConverter
from runtime.payloads import Payload

C = DataConverter()


def _round_trip(value: Any, hint: Any) -> Any:
    return C.decode_one(C.encode_one(value), hint)


def _json(text: str) -> Payload:
    return Payload("json/plain", text.encode())


# --- timedelta --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        timedelta(0),
        timedelta(seconds=5),
        timedelta(milliseconds=1500),
        timedelta(microseconds=1),
        timedelta(microseconds=-1),
        timedelta(days=-3, microseconds=5),
        timedelta(days=146_000, microseconds=1),  # 400 years: a float's 53 bits run out
        timedelta.max,  # a common "no limit" sentinel: its float seconds overflowed on decode
        timedelta.min,
    ],
)
def test_every_timedelta_round_trips_exactly(value: timedelta) -> None:
    assert _round_trip(value, timedelta) == value


def test_a_timedelta_travels_as_protobuf_json_duration_text() -> None:
    assert C.encode_one(timedelta(seconds=5)).data == b'"5s"'
    assert C.encode_one(timedelta(milliseconds=1500)).data == b'"1.500s"'
    assert C.encode_one(timedelta(days=1, microseconds=3)).data == b'"86400.000003s"'
    assert C.encode_one(timedelta(microseconds=-1)).data == b'"-0.000001s"'


def test_a_timedelta_recorded_as_float_seconds_still_decodes() -> None:
    """Histories written before the text form hold JSON numbers; they must still replay."""
    assert C.decode_one(_json("1.5"), timedelta) == timedelta(seconds=1.5)
    assert C.decode_one(_json("-1e-06"), timedelta) == timedelta(microseconds=-1)
    assert C.decode_one(_json("30"), timedelta) == timedelta(seconds=30)


def test_duration_text_from_other_writers_decodes() -> None:
    assert C.decode_one(_json('"0.000000001s"'), timedelta) == timedelta(0)  # nanos round
    assert C.decode_one(_json('"1.0000005s"'), timedelta) == timedelta(seconds=1)  # half even
    assert C.decode_one(_json('"-2.25s"'), timedelta) == timedelta(seconds=-2.25)


@pytest.mark.parametrize("text", ['"5"', '"5 s"', '"1e3s"', '"Infinitys"', '"s"', "true", "[]"])
def test_text_that_is_no_duration_is_refused(text: str) -> None:
    with pytest.raises((TypeError, ValueError)):
        C.decode_one(_json(text), timedelta)


def test_a_duration_beyond_timedelta_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        C.decode_one(_json('"99999999999999999999s"'), timedelta)


def test_timedelta_dict_keys_round_trip_and_old_keys_still_decode() -> None:
    assert _round_trip({timedelta(hours=1): "h"}, dict[timedelta, str]) == {timedelta(hours=1): "h"}
    assert C.decode_one(_json('{"3600.0":"h"}'), dict[timedelta, str]) == {timedelta(hours=1): "h"}


# --- floats JSON cannot carry ----------------------------------------------------------


@dataclasses.dataclass
class Line:
    sku: str
    price: float


@dataclasses.dataclass
class Order:
    lines: list[Line]
    totals: dict[str, float] = dataclasses.field(default_factory=dict)


class Quote(pydantic.BaseModel):
    price: float


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_float_json_cannot_carry_is_refused_by_name(number: float) -> None:
    """`Infinity`/`NaN` are not JSON: other languages' parsers refuse the whole payload."""
    with pytest.raises(TypeError, match=rf"cannot convert float {number} to JSON at \$:"):
        C.encode_one(number)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (Order([Line("a", 1.0), Line("b", math.nan)]), r"\$\.lines\[1\]\.price"),
        (Order([], {"eur": math.inf}), r"\$\.totals\.eur"),
        ({"unit price": math.inf}, r"\$\['unit price'\]"),
        ({math.inf: 1}, r"\$ \(a dict key\)"),
        ([(1.0, -math.inf)], r"\$\[0\]\[1\]"),
        (Quote(price=math.nan), r"\$\.price"),
    ],
)
def test_the_refusal_says_where_the_value_is(value: Any, where: str) -> None:
    with pytest.raises(TypeError, match=f"to JSON at {where}"):
        C.encode_one(value)


def test_other_unconvertible_values_say_where_they_are_too() -> None:
    with pytest.raises(TypeError, match=r"cannot convert object to JSON at \$\.lines\[0\]"):
        C.encode_one({"lines": [object()]})


def test_the_refused_value_among_several_is_named_by_position() -> None:
    with pytest.raises(TypeError) as refused:
        C.encode(["fine", 1.5, math.nan])
    assert "value 3 of 3" in "".join(refused.value.__notes__)


def test_non_finite_floats_recorded_before_still_decode() -> None:
    """Payloads written before the refusal hold `NaN`/`Infinity`; they must still replay."""
    assert C.decode_one(_json("Infinity"), float) == math.inf
    assert math.isnan(C.decode_one(_json('{"sku":"a","price":NaN}'), Line).price)


# --- collections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('"abc"', list[str]),  # was ['a', 'b', 'c']
        ('{"a":1}', list[str]),  # was ['a']: the keys
        ('"abc"', list),
        ('"ab"', set[str]),
        ('"ab"', tuple[str, ...]),
        ("[1]", dict[str, int]),  # was AttributeError, which a union did not catch
        ('"x"', dict),  # was 'x'
        ('"abc"', Sequence[str]),
    ],
)
def test_a_collection_hint_takes_only_its_json_shape(text: str, hint: Any) -> None:
    with pytest.raises(TypeError, match="expected a JSON"):
        C.decode_one(_json(text), hint)


def test_a_fixed_tuple_takes_exactly_its_length() -> None:
    assert _round_trip((1, "a"), tuple[int, str]) == (1, "a")
    for text in ('[1,"a","dropped"]', "[1]"):  # were (1, 'a') and (1,): silently cut
        with pytest.raises(TypeError, match="2 items"):
            C.decode_one(_json(text), tuple[int, str])


def test_a_union_of_collections_picks_the_shape_that_fits() -> None:
    assert C.decode_one(_json("[1,2]"), dict[str, int] | list[int]) == [1, 2]
    assert C.decode_one(_json('{"a":1}'), list[int] | dict[str, int]) == {"a": 1}


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        (Sequence[Line], [Line("a", 1.0)], [Line("a", 1.0)]),  # items were left as dicts
        (MutableSequence[datetime], [datetime(2026, 1, 1)], [datetime(2026, 1, 1)]),
        (Iterable[Line], (Line("a", 1.0),), [Line("a", 1.0)]),
        (Mapping[str, Line], {"k": Line("a", 1.0)}, {"k": Line("a", 1.0)}),
        (Set[int], {1, 2}, {1, 2}),
    ],
)
def test_abstract_collection_hints_decode_their_items(hint: Any, value: Any, expected: Any) -> None:
    assert _round_trip(value, hint) == expected


# --- unions -----------------------------------------------------------------------------


class Status(enum.Enum):
    OK = "ok"
    LATE = "late"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (Status.OK, Status | str, Status.OK),  # was 'ok': primitives were tried first
        ("free text", Status | str, "free text"),
        (Level.LOW, Level | int, Level.LOW),  # was 1
        (7, Level | int, 7),
        (Level.LOW, int | Level, 1),  # the declared order decides
        (datetime(2026, 1, 1), datetime | str, datetime(2026, 1, 1)),
        ("not a date", datetime | str, "not a date"),
        (5, float | int, 5),  # an exact fit wins over widening
        (5, float | str, 5.0),  # ...which a float still does to an int
        (2.5, int | float, 2.5),
        (5, str | int, 5),
        ("5", int | str, "5"),
        (True, int | bool, True),
        ("abc", list[str] | str, "abc"),
    ],
)
def test_a_union_takes_the_first_declared_member_that_fits(
    value: Any, hint: Any, expected: Any
) -> None:
    decoded = _round_trip(value, hint)
    assert decoded == expected and type(decoded) is type(expected)


# --- hints the converter used to pass over -------------------------------------------------


def test_a_literal_takes_only_its_values() -> None:
    assert _round_trip("a", Literal["a", "b"]) == "a"
    assert _round_trip(Status.OK, Literal[Status.OK]) is Status.OK
    for text in ('"c"', "1", "true"):  # "c" came through as it was
        with pytest.raises(TypeError, match="none of"):
            C.decode_one(_json(text), Literal["a", "b", 2])
    with pytest.raises(TypeError):
        C.decode_one(_json("true"), Literal[1])  # a bool is no int
    assert _round_trip("b", Literal["a"] | Literal["b"]) == "b"


class Event(TypedDict):
    kind: str
    at: datetime
    note: NotRequired[str]


def test_a_typed_dict_decodes_its_fields_by_their_hints() -> None:
    """It raised "TypedDict does not support instance and class checks"."""
    event: Event = {"kind": "k", "at": datetime(2026, 1, 1)}
    assert _round_trip(event, Event) == event
    newer = C.decode_one(_json('{"kind":"k","at":"2026-01-01T00:00:00","by":"x"}'), Event)
    assert newer == {"kind": "k", "at": datetime(2026, 1, 1), "by": "x"}  # unknown kept
    with pytest.raises(TypeError, match="'at'"):
        C.decode_one(_json('{"kind":"k"}'), Event)


UserId = NewType("UserId", int)


def test_annotated_and_new_type_hints_decode_as_what_they_wrap() -> None:
    assert _round_trip([datetime(2026, 1, 1)], list[Annotated[datetime, "utc"]]) == [
        datetime(2026, 1, 1)
    ]  # was the ISO text
    assert _round_trip(7, UserId) == 7
    with pytest.raises(TypeError, match="expected int"):
        C.decode_one(_json('"7"'), UserId)  # came through as text


# --- versioning: payloads recorded by older or newer code ------------------------------


@dataclasses.dataclass
class Address:
    city: str
    zip_code: str = ""


@dataclasses.dataclass
class Customer:
    """Version 2: `address`, `tags` and `vip` were added after version 1 was recorded."""

    name: str
    address: Address | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    vip: bool = False


def test_fields_missing_from_an_older_payload_take_their_defaults() -> None:
    assert C.decode_one(_json('{"name":"ada"}'), Customer) == Customer("ada")
    older_nested = '{"name":"ada","address":{"city":"Paris"}}'
    assert C.decode_one(_json(older_nested), Customer) == Customer("ada", Address("Paris"))


def test_fields_unknown_to_this_code_are_ignored() -> None:
    """A payload from newer code (a field this version has not got yet) still decodes."""
    newer = '{"name":"ada","vip":true,"loyalty":{"tier":3}}'
    assert C.decode_one(_json(newer), Customer) == Customer("ada", vip=True)


def test_a_required_field_missing_is_named() -> None:
    with pytest.raises(TypeError, match=r"cannot decode Customer: 'name' missing from the JSON"):
        C.decode_one(_json('{"vip":true}'), Customer)


@pytest.mark.parametrize("text", ['["ada"]', '"ada"', "5"])
def test_a_dataclass_takes_only_an_object(text: str) -> None:
    with pytest.raises(TypeError, match="expected a JSON object"):
        C.decode_one(_json(text), Customer)


class Span(NamedTuple):
    start: int
    end: int = -1


def test_a_named_tuple_fills_defaults_for_older_payloads_and_ignores_newer_items() -> None:
    assert _round_trip(Span(1, 2), Span) == Span(1, 2)
    assert C.decode_one(_json("[1]"), Span) == Span(1)  # ValueError from zip(strict=True)
    assert C.decode_one(_json("[1,2,3]"), Span) == Span(1, 2)
    with pytest.raises(TypeError, match=r"cannot decode Span: 'start' missing from the JSON"):
        C.decode_one(_json("[]"), Span)
    with pytest.raises(TypeError, match="expected a JSON array"):
        C.decode_one(_json('{"start":1}'), Span)


# --- Decimal ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1.10", "-0.000001", "12345678901234567890.123456789", "1E+3"])
def test_a_decimal_travels_as_its_exact_text(text: str) -> None:
    """A JSON number would be read as a double here and in most languages: money is not."""
    value = Decimal(text)
    assert C.encode_one(value).data == f'"{text}"'.encode()
    decoded = _round_trip(value, Decimal)
    assert decoded == value and str(decoded) == text  # trailing zeros and exponent kept


def test_a_decimal_reads_json_numbers_other_writers_send() -> None:
    assert C.decode_one(_json("3"), Decimal) == Decimal(3)
    assert C.decode_one(_json("1.1"), Decimal) == Decimal("1.1")  # not 1.1000000000000000888


def test_decimals_in_structures_and_as_keys_round_trip() -> None:
    value = {Decimal("0.5"): [Decimal("2.50")]}
    assert _round_trip(value, dict[Decimal, list[Decimal]]) == value


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_a_decimal_json_cannot_carry_as_a_number_is_refused(text: str) -> None:
    with pytest.raises(TypeError, match=f"cannot convert Decimal {text} to JSON at"):
        C.encode_one(Decimal(text))
    with pytest.raises(ValueError, match="not a finite decimal"):
        C.decode_one(_json(f'"{text}"'), Decimal)


@pytest.mark.parametrize("text", ['"abc"', "true", "[]"])
def test_what_is_no_decimal_is_refused(text: str) -> None:
    with pytest.raises((TypeError, ValueError)):
        C.decode_one(_json(text), Decimal)


# --- generic dataclasses ---------------------------------------------------------------

ItemT = TypeVar("ItemT")


@dataclasses.dataclass
class Page(Generic[ItemT]):
    items: list[ItemT]
    first: ItemT | None = None
    next_token: str = ""


def test_a_generic_dataclass_decodes_its_fields_through_the_given_arguments() -> None:
    page = Page([Line("a", 1.0)], Line("a", 1.0), "t")
    assert _round_trip(page, Page[Line]) == page  # was the plain dict
    assert _round_trip([Page([datetime(2026, 1, 1)])], list[Page[datetime]]) == [
        Page([datetime(2026, 1, 1)])
    ]


def test_a_bare_generic_dataclass_leaves_its_type_variables_as_json() -> None:
    assert _round_trip(Page([1, 2]), Page) == Page([1, 2])


# --- small leaks ----------------------------------------------------------------------


def test_dict_keys_that_write_the_same_text_are_refused_not_merged() -> None:
    with pytest.raises(TypeError, match=r"to JSON at \$\.k: two keys"):
        C.encode_one({"k": {1: "int", "1": "text"}})  # one of them was silently dropped


def test_bytes_in_a_union_refuse_a_non_string_so_the_next_member_is_tried() -> None:
    assert C.decode_one(_json("5"), bytes | int) == 5  # AttributeError escaped the union


def test_a_uuid_refuses_a_non_string_with_a_type_error_so_a_union_goes_on() -> None:
    """`uuid.UUID(5)` raises AttributeError, which a union does not catch: ``UUID | int``
    failed on the very int its second member is for, and a bare UUID hint raised an
    error the callers that catch conversion errors (TypeError, ValueError) let through."""
    assert C.decode_one(_json("5"), uuid.UUID | int) == 5
    with pytest.raises(TypeError, match="UUID"):
        C.decode_one(_json("5"), uuid.UUID)


def test_without_pydantic_everything_else_converts(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic is optional: nothing else may depend on it being importable."""
    monkeypatch.setattr("runtime.converter._pydantic", None)
    order = Order([Line("a", 1.5)], {"eur": 1.5})
    assert _round_trip(order, Order) == order
    assert _round_trip(Page([Decimal("1.10")]), Page[Decimal]) == Page([Decimal("1.10")])
