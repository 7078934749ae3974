"""One record type on the wire: Python value <-> single-object encoded Avro bytes.

A :class:`Codec` binds a top-level schema of the contract to the converters of
:mod:`topics.mapping`. Writing always uses the current schema. Reading looks the
fingerprint up in the registry: the current schema reads directly, a known older (or
newer) version of the same record is resolved to the current one by fastavro's schema
resolution, anything else is a :class:`~topics.errors.DecodeError`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from topics.errors import DecodeError, EncodeError
from topics.framing import HEADER_LEN, fingerprint_of, header
from topics.registry import SchemaRegistry
from topics.schemas import VersionedSchema

T = TypeVar("T")

_LONG = parse_schema("long")

#: Where a record was read: (topic, partition, offset), each None when not known.
Place = tuple[str | None, int | None, int | None]


class Codec(Generic[T]):
    """Encoder and decoder of one top-level record type."""

    def __init__(
        self,
        schema: VersionedSchema,
        to_avro: Callable[[T], Any],
        from_avro: Callable[[Any], T],
        registry: SchemaRegistry,
    ) -> None:
        self.schema = schema
        self._to_avro = to_avro
        self._from_avro = from_avro
        self._registry = registry
        self._header = header(schema.fingerprint)
        #: An array of this record, for `read_many`; parsed when first needed.
        self._array: Any = None

    def encode(self, value: T) -> bytes:
        """Single-object encoding of ``value`` with the current schema."""
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self.schema.parsed, self._to_avro(value))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise EncodeError(
                f"cannot write {type(value).__name__} as {self.schema.name}: {exc!r}"
            ) from exc
        return buf.getvalue()

    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> T:
        """The value in ``data``; where it came from only serves the error message."""
        record = self._read(data, (topic, partition, offset))
        try:
            return self._from_avro(record)
        except Exception as exc:  # a value the model refuses (an unknown enum symbol, ...)
            raise DecodeError(
                f"body does not decode as {self.schema.name}: {exc!r}",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc

    def read_many(self, datas: Sequence[bytes], where: Sequence[Place]) -> list[Any]:
        """Many records as fastavro reads them (dicts by field name, not model values);
        ``where`` says where each came from (topic, partition, offset), for the error.

        For the hot loop that needs a field or two of every record (rebuilding a store):
        records written with the current schema are read in one fastavro call, their bodies
        joined as the items of one Avro array, and no model value is built — together a
        fraction of the CPU of decoding them one by one. A batch with any other record, or
        one that does not read back as exactly its records, is read one by one instead,
        which raises for the record at fault.
        """
        if not datas:
            return []
        if any(data is None or data[:HEADER_LEN] != self._header for data in datas):
            return self._read_each(datas, where)
        body = b"".join([self._array_start(len(datas)), *(d[HEADER_LEN:] for d in datas), b"\0"])
        buf = io.BytesIO(body)
        try:
            records = schemaless_reader(
                buf,
                self._array_schema(),
                None,
                return_record_name=True,
                return_record_name_override=True,
            )
        except Exception:  # fastavro raises many kinds on corrupt input: find the record
            records = None
        if isinstance(records, list) and len(records) == len(datas) and buf.tell() == len(body):
            return records
        return self._read_each(datas, where)

    def _read_each(self, datas: Sequence[bytes], where: Sequence[Place]) -> list[Any]:
        return [self._read(data, place) for data, place in zip(datas, where, strict=True)]

    def _read(self, data: bytes, where: Place) -> Any:
        """The record in ``data`` as fastavro reads it, checked to fill ``data`` exactly."""
        topic, partition, offset = where
        if data is None:
            raise DecodeError(
                f"a tombstone is not a {self.schema.name}",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        if data[:HEADER_LEN] == self._header:  # written with the current schema: most records
            writer, reader_schema = self.schema, None
        else:
            writer, reader_schema = self._writer_of(data, topic, partition, offset)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = schemaless_reader(
                buf,
                writer.parsed,
                reader_schema,
                return_record_name=True,
                return_record_name_override=True,
            )
        except Exception as exc:  # fastavro raises many kinds on corrupt input
            raise DecodeError(
                f"body does not decode as {writer.name} {writer.fingerprint.hex()}: {exc!r}",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} bytes left over after the {writer.name} record",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        return record

    def _array_schema(self) -> Any:
        if self._array is None:
            self._array = parse_schema({"type": "array", "items": self.schema.schema})
        return self._array

    @staticmethod
    def _array_start(count: int) -> bytes:
        """An Avro array's first block header: its item count, as fastavro writes a long."""
        buf = io.BytesIO()
        schemaless_writer(buf, _LONG, count)
        return buf.getvalue()

    def _writer_of(
        self, data: bytes, topic: str | None, partition: int | None, offset: int | None
    ) -> tuple[VersionedSchema, Any]:
        """The writer schema of a record not written with the current one, and our reader."""
        where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        try:
            fingerprint = fingerprint_of(data)
        except ValueError as exc:
            raise DecodeError(str(exc), **where) from None
        known = self._registry.get(fingerprint)
        if known is None:
            raise DecodeError(
                f"unknown schema fingerprint {fingerprint.hex()} "
                f"(not a version of {self.schema.name} this code knows)",
                **where,
            )
        if known.name != self.schema.name:
            raise DecodeError(f"record is a {known.name}, expected a {self.schema.name}", **where)
        return known, self.schema.parsed
