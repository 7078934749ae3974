"""Round trips of every key and value, and what a reader does with bytes it cannot trust."""

from __future__ import annotations

import copy
import io
from dataclasses import replace
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from runtime import events, messages
from runtime.events import HistoryEvent, WorkflowStarted
from runtime.messages import (
    ActivityTask,
    DurableTimer,
    Reply,
    StartWorkflow,
    StatusRecord,
    WorkflowStatus,
)
from runtime.payloads import Failure, Payload
from tests.topics.samples import build, nested_failure, union_members
from topics import serde
from topics.codec import Codec
from topics.errors import DecodeError, EncodeError
from topics.framing import MAGIC
from topics.registry import SchemaRegistry, default_registry
from topics.schemas import current, fingerprint64, versioned

EVENT_TYPES = union_members(events.EventAttributes)
INBOX_TYPES = union_members(messages.InboxMessage)
TASK_TYPES = union_members(messages.TaskRecord)
REPLY_TYPES = union_members(messages.ReplyBody)


def _event(attributes: Any, event_id: int = 7) -> HistoryEvent:
    return HistoryEvent("wf-ü", "run-1", event_id, 1_700_000_000_123, attributes)


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_history_event_round_trips(cls: type, full: bool) -> None:
    event = _event(build(cls, full=full))
    assert serde.decode_history_event(serde.encode_history_event(event)) == event


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", INBOX_TYPES, ids=lambda c: c.__name__)
def test_every_inbox_message_round_trips(cls: type, full: bool) -> None:
    message = build(cls, full=full)
    assert serde.decode_inbox(serde.encode_inbox(message)) == message


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", TASK_TYPES, ids=lambda c: c.__name__)
def test_every_task_record_round_trips(cls: type, full: bool) -> None:
    task = build(cls, full=full)
    assert serde.decode_task(serde.encode_task(task)) == task


@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
@pytest.mark.parametrize("cls", REPLY_TYPES, ids=lambda c: c.__name__)
def test_every_reply_round_trips(cls: type, full: bool) -> None:
    reply = Reply("client-1", "req-1", "wf-1", build(cls, full=full))
    assert serde.decode_reply(serde.encode_reply(reply)) == reply


def test_a_reply_carries_a_whole_history_page() -> None:
    page = messages.HistoryPage(
        tuple(_event(build(c, full=True), i) for i, c in enumerate(EVENT_TYPES))
    )
    reply = Reply("client-1", "req-1", "wf-1", page)
    assert serde.decode_reply(serde.encode_reply(reply)) == reply


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_status_round_trips_every_status(status: WorkflowStatus) -> None:
    record = StatusRecord("wf", "run", "Order", "q", status, 1, None, 12, nested_failure())
    decoded = serde.decode_status(serde.encode_status(record))
    assert decoded == record
    assert type(decoded.status) is WorkflowStatus


def test_optionals_keep_none_apart_from_set_values() -> None:
    unset = StartWorkflow("wf", "T", "q", (), "r")
    set_ = StartWorkflow("wf", "T", "q", (), "r", reply_to="", parent=events.ParentRef("p", "r", 0))
    assert serde.decode_inbox(serde.encode_inbox(unset)) == unset
    decoded = serde.decode_inbox(serde.encode_inbox(set_))
    assert isinstance(decoded, StartWorkflow)
    assert decoded.reply_to == ""
    assert decoded == set_


def test_nested_failures_keep_their_causes() -> None:
    failure = nested_failure()
    event = _event(events.WorkflowFailed(failure))
    decoded = serde.decode_history_event(serde.encode_history_event(event)).attributes
    assert isinstance(decoded, events.WorkflowFailed)
    assert decoded.failure.cause is not None and decoded.failure.cause.cause is not None
    assert decoded.failure.cause.cause.details == (Payload("json/plain", b'{"free": 0}'),)


def test_timer_and_keys_round_trip() -> None:
    timer = DurableTimer("wf", "run", "activity-timeout/3/1", 1_700_000_000_000)
    assert serde.decode_timer(serde.encode_timer(timer)) == timer
    assert tuple(serde.decode_history_key(serde.encode_history_key("wf", 1 << 40))) == (
        "wf",
        1 << 40,
    )
    assert tuple(serde.decode_timer_key(serde.encode_timer_key("wf", "t/1"))) == ("wf", "t/1")


def test_keys_are_stable_bytes_for_compaction() -> None:
    assert serde.encode_history_key("wf", 1) == serde.encode_history_key("wf", 1)
    assert serde.encode_history_key("wf", 1) != serde.encode_history_key("wf", 2)
    assert serde.workflow_key("wf-ü") == "wf-ü".encode()
    assert serde.task_key("wf", 3) == b"wf/3"


def test_records_are_single_object_encoded() -> None:
    data = serde.encode_status(
        StatusRecord("wf", "r", "T", "q", WorkflowStatus.RUNNING, 1, None, 1)
    )
    assert data[:2] == MAGIC
    assert data[2:10] == current()["chronik.StatusRecord"].fingerprint


def test_fingerprint_is_avro_crc64_little_endian() -> None:
    # Avro's own test data (lang/java SchemaNormalization, share/test/data/schema-tests.txt):
    # "null" -> 7195948357588979594, written little-endian in single-object encoding.
    assert fingerprint64("null") == (7195948357588979594).to_bytes(8, "little")


# --- what a reader does with bytes it cannot trust ----------------------------------------


def _status_bytes() -> bytes:
    return serde.encode_status(StatusRecord("wf", "r", "T", "q", WorkflowStatus.FAILED, 1, 2, 3))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than"),
        (b"\x00\x00\x00\x00\x01abcdefgh", "Confluent"),
        (b"garbage-garbage", "single-object marker"),
        (MAGIC + b"\x01" * 8 + b"body", "unknown schema fingerprint"),
        (_status_bytes()[:-3], "does not decode"),
        (_status_bytes() + b"\x00", "left over"),
    ],
)
def test_a_record_that_does_not_decode_names_topic_partition_offset(
    data: bytes, reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        serde.decode_status(data, topic="ns.status", partition=3, offset=42)
    error = caught.value
    assert (error.topic, error.partition, error.offset) == ("ns.status", 3, 42)
    assert reason in error.reason
    assert "ns.status[3]@42" in str(error)


def test_a_record_of_another_topic_is_refused() -> None:
    with pytest.raises(DecodeError, match=r"is a chronik\.StatusRecord, expected a chronik\.Reply"):
        serde.decode_reply(_status_bytes())


def test_a_corrupt_union_branch_is_a_decode_error() -> None:
    data = bytearray(serde.encode_inbox(StartWorkflow("wf", "T", "q", (), "r")))
    data[10] = 0x7E  # union index 63: no such message type
    with pytest.raises(DecodeError, match="does not decode"):
        serde.decode_inbox(bytes(data), topic="ns.inbox", partition=0, offset=1)


def test_encoding_a_wrong_value_is_a_typed_error() -> None:
    with pytest.raises(EncodeError):
        serde.encode_inbox(ActivityTask("wf", "r", "T", 1, 1, "a", "q", (), 0, 0, 0))  # type: ignore[arg-type]


# --- evolution: a reader with a newer schema reads an older record --------------------------


def _older_history_event_schema() -> Any:
    """The HistoryEvent schema as it was before ``WorkflowStarted.first_run_id`` and
    ``Failure.timeout_type`` existed (fields with defaults: the evolution rule)."""
    schema = copy.deepcopy(current()["chronik.HistoryEvent"].schema)

    def strip(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                strip(item)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                drop = {"WorkflowStarted": "first_run_id", "Failure": "timeout_type"}.get(
                    node["name"]
                )
                node["fields"] = [f for f in node["fields"] if f["name"] != drop]
            for value in node.values():
                strip(value)

    strip(schema)
    return schema


def test_a_reader_with_a_newer_schema_reads_an_older_record() -> None:
    old = versioned(_older_history_event_schema())
    assert old.fingerprint != current()["chronik.HistoryEvent"].fingerprint
    registry = SchemaRegistry()
    registry.register(old)
    mapper = serde.mapper()
    old_writer = Codec(old, mapper.encoder(HistoryEvent), mapper.decoder(HistoryEvent), registry)
    new_reader = Codec(
        current()["chronik.HistoryEvent"],
        mapper.encoder(HistoryEvent),
        mapper.decoder(HistoryEvent),
        registry,
    )
    started = _event(WorkflowStarted("T", "q", (Payload("json/plain", b"1"),), "req"))
    old_dict = _without(mapper.encoder(HistoryEvent)(started), "first_run_id")
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    schemaless_writer(buf, old.parsed, old_dict)
    decoded = new_reader.decode(buf.getvalue())
    assert decoded == started  # first_run_id took its default ""
    failed = _event(events.WorkflowFailed(Failure("boom", kind="timeout")))
    assert new_reader.decode(old_writer.encode(failed)) == failed


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    name, attributes = record["attributes"]
    return {**record, "attributes": (name, {k: v for k, v in attributes.items() if k != field})}


def test_an_unknown_version_is_readable_once_registered() -> None:
    old = versioned(_older_history_event_schema())
    assert default_registry().get(old.fingerprint) is None
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        serde.decode_history_event(MAGIC + old.fingerprint + b"\x00")


#: The InboxEnvelope released before ``StartWorkflow.await_result`` existed (avro/versions).
_INBOX_BEFORE_AWAIT_RESULT = bytes.fromhex("230cab0e390d709a")


def test_await_result_is_read_from_older_starts_and_ignored_by_older_readers() -> None:
    old = default_registry().get(_INBOX_BEFORE_AWAIT_RESULT)
    assert old is not None, "the released snapshot must stay in avro/versions"
    new = current()["chronik.InboxEnvelope"]
    start = StartWorkflow("wf", "T", "q", (Payload("json/plain", b"1"),), "req", reply_to="c")
    branch, fields = serde.mapper().encoder(messages.InboxMessage)(start)
    old_record = {"message": (branch, {k: v for k, v in fields.items() if k != "await_result"})}
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    schemaless_writer(buf, old.parsed, old_record)
    assert serde.decode_inbox(buf.getvalue()) == start  # await_result took its default

    awaiting = serde.encode_inbox(replace(start, await_result=True))
    body = io.BytesIO(awaiting[len(MAGIC) + len(new.fingerprint) :])
    read_by_old: Any = schemaless_reader(body, new.parsed, old.parsed, return_record_name=True)
    name, fields = read_by_old["message"]
    assert (name, fields["request_id"]) == ("chronik.StartWorkflow", "req")
    assert "await_result" not in fields
