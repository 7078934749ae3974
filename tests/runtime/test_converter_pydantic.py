"""The JSON converter's optional pydantic support: models in, models out, by type hint."""

from __future__ import annotations

from datetime import datetime

import pydantic

from runtime.converter import DataConverter


class Order(pydantic.BaseModel):
    order_id: str
    quantity: int
    placed_at: datetime


def test_a_pydantic_model_round_trips_through_its_type_hint() -> None:
    converter = DataConverter()
    order = Order(order_id="A-1", quantity=3, placed_at=datetime(2026, 11, 25, 8, 0))
    [payload] = converter.encode([order])
    assert payload.encoding == "json/plain"
    assert converter.decode_one(payload, Order) == order


def test_without_a_hint_a_model_decodes_to_plain_json() -> None:
    converter = DataConverter()
    [payload] = converter.encode([Order(order_id="B", quantity=1, placed_at=datetime(2026, 1, 1))])
    assert converter.decode_one(payload, None) == {
        "order_id": "B",
        "quantity": 1,
        "placed_at": "2026-01-01T00:00:00",
    }
