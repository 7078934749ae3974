"""The typed serde of every key and value on every Chronik topic.

One function pair per topic record, so callers never pick schemas by hand:

- ``<ns>.inbox``: key :func:`workflow_key`, value :func:`encode_inbox`.
- ``<ns>.history``: key :func:`encode_history_key`, value :func:`encode_history_event`.
- ``<ns>.tasks.<queue>``: key :func:`task_key`, value :func:`encode_task`.
- ``<ns>.timers``: key :func:`encode_timer_key`, value :func:`encode_timer`.
- ``<ns>.status``: key :func:`workflow_key`, value :func:`encode_status`.
- ``<ns>.replies``: key :func:`client_key`, value :func:`encode_reply`.

Avro keys and values are single-object encoded (:mod:`topics.framing`); keys that are a
workflow or client id are its plain UTF-8 bytes, because partitioning hashes the key
bytes and producers in other languages must compute the same partition. Decoders take the
record's topic, partition and offset only to name them in a :class:`DecodeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from runtime.events import HistoryEvent
from runtime.messages import DurableTimer, InboxMessage, Reply, StatusRecord, TaskRecord
from topics.codec import Codec, Place
from topics.errors import DecodeError
from topics.keys import HistoryKey, TimerKey
from topics.mapping import Mapper
from topics.registry import default_registry
from topics.schemas import current

__all__ = [
    "client_key",
    "decode_history_event",
    "decode_history_key",
    "decode_inbox",
    "decode_reply",
    "decode_status",
    "decode_task",
    "decode_timer",
    "decode_timer_key",
    "decode_utf8_key",
    "encode_history_event",
    "encode_history_key",
    "encode_inbox",
    "encode_reply",
    "encode_status",
    "encode_task",
    "encode_timer",
    "encode_timer_key",
    "task_key",
    "workflow_key",
]

_VALUE_TYPES: dict[str, Any] = {
    "chronik.HistoryKey": HistoryKey,
    "chronik.HistoryEvent": HistoryEvent,
    "chronik.TimerKey": TimerKey,
    "chronik.DurableTimer": DurableTimer,
    "chronik.StatusRecord": StatusRecord,
    "chronik.Reply": Reply,
}
#: Records whose only field is a union of model classes (no dataclass of their own).
_ENVELOPES: dict[str, tuple[str, Any]] = {
    "chronik.InboxEnvelope": ("message", InboxMessage),
    "chronik.TaskEnvelope": ("task", TaskRecord),
}


@cache
def mapper() -> Mapper:
    """The converters of the whole model, generated once."""
    return Mapper([*_VALUE_TYPES.values(), *(tp for _, tp in _ENVELOPES.values())])


@cache
def codecs() -> dict[str, Codec[Any]]:
    """One codec per top-level record of the contract, by full name."""
    m, registry, schemas = mapper(), default_registry(), current()
    out: dict[str, Codec[Any]] = {}
    for name, tp in _VALUE_TYPES.items():
        out[name] = Codec(schemas[name], m.encoder(tp), m.decoder(tp), registry)
    for name, (field, tp) in _ENVELOPES.items():
        enc, dec = m.encoder(tp), m.decoder(tp)
        out[name] = Codec(
            schemas[name],
            lambda v, enc=enc, field=field: {field: enc(v)},  # type: ignore[misc]
            lambda d, dec=dec, field=field: dec(d[field]),  # type: ignore[misc]
            registry,
        )
    return out


# --- plain UTF-8 keys ---------------------------------------------------------------------


def workflow_key(workflow_id: str) -> bytes:
    """Key of ``<ns>.inbox`` and ``<ns>.status``: the UTF-8 workflow id."""
    return workflow_id.encode("utf-8")


def client_key(client_id: str) -> bytes:
    """Key of ``<ns>.replies``: the UTF-8 id of the client that asked."""
    return client_id.encode("utf-8")


def task_key(workflow_id: str, seq: int) -> bytes:
    """Key of ``<ns>.tasks.<queue>``: the same for a task and its cancellation."""
    return f"{workflow_id}/{seq}".encode()


def decode_utf8_key(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> str:
    """The id in a UTF-8 key (workflow id, client id)."""
    try:
        return data.decode("utf-8")
    except (UnicodeDecodeError, AttributeError) as exc:
        raise DecodeError(
            f"key is not UTF-8 text: {exc}", topic=topic, partition=partition, offset=offset
        ) from None


# --- Avro keys and values ---------------------------------------------------------------------


def encode_history_key(workflow_id: str, event_id: int) -> bytes:
    """Key of one ``<ns>.history`` record: one key per event, never per workflow."""
    return codecs()["chronik.HistoryKey"].encode(HistoryKey(workflow_id, event_id))


def decode_history_key(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> HistoryKey:
    codec: Codec[HistoryKey] = codecs()["chronik.HistoryKey"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def read_history_keys(datas: Sequence[bytes], where: Sequence[Place]) -> list[tuple[str, int]]:
    """(workflow id, event id) of many history keys at once (`Codec.read_many`): what
    rebuilding a store reads for every record."""
    records = codecs()["chronik.HistoryKey"].read_many(datas, where)
    return [(r["workflow_id"], r["event_id"]) for r in records]


def encode_history_event(event: HistoryEvent) -> bytes:
    return codecs()["chronik.HistoryEvent"].encode(event)


def decode_history_event(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> HistoryEvent:
    codec: Codec[HistoryEvent] = codecs()["chronik.HistoryEvent"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def encode_inbox(message: InboxMessage) -> bytes:
    return codecs()["chronik.InboxEnvelope"].encode(message)


def decode_inbox(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> InboxMessage:
    codec: Codec[InboxMessage] = codecs()["chronik.InboxEnvelope"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def encode_task(task: TaskRecord) -> bytes:
    return codecs()["chronik.TaskEnvelope"].encode(task)


def decode_task(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> TaskRecord:
    codec: Codec[TaskRecord] = codecs()["chronik.TaskEnvelope"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def encode_timer_key(workflow_id: str, timer_id: str) -> bytes:
    """Key of one ``<ns>.timers`` record; the fire or cancel tombstone reuses it."""
    return codecs()["chronik.TimerKey"].encode(TimerKey(workflow_id, timer_id))


def decode_timer_key(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> TimerKey:
    codec: Codec[TimerKey] = codecs()["chronik.TimerKey"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def read_timers(datas: Sequence[bytes], where: Sequence[Place]) -> list[tuple[str, str, int]]:
    """(workflow id, timer id, fire time) of many timer records at once (`Codec.read_many`):
    what rebuilding a store reads of the timers history records carry."""
    records = codecs()["chronik.DurableTimer"].read_many(datas, where)
    return [(r["workflow_id"], r["timer_id"], r["fire_at_ms"]) for r in records]


def read_timer_keys(datas: Sequence[bytes], where: Sequence[Place]) -> list[tuple[str, str]]:
    """(workflow id, timer id) of many timer keys at once (`Codec.read_many`)."""
    records = codecs()["chronik.TimerKey"].read_many(datas, where)
    return [(r["workflow_id"], r["timer_id"]) for r in records]


def encode_timer(timer: DurableTimer) -> bytes:
    return codecs()["chronik.DurableTimer"].encode(timer)


def decode_timer(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> DurableTimer:
    codec: Codec[DurableTimer] = codecs()["chronik.DurableTimer"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def encode_status(status: StatusRecord) -> bytes:
    return codecs()["chronik.StatusRecord"].encode(status)


def decode_status(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> StatusRecord:
    codec: Codec[StatusRecord] = codecs()["chronik.StatusRecord"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)


def encode_reply(reply: Reply) -> bytes:
    return codecs()["chronik.Reply"].encode(reply)


def decode_reply(
    data: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> Reply:
    codec: Codec[Reply] = codecs()["chronik.Reply"]
    return codec.decode(data, topic=topic, partition=partition, offset=offset)
