"""One record type on the wire: Python value <-> single-object encoded Avro bytes.

A :class:`Codec` binds a top-level schema of the contract to the converters of
:mod:`topics.mapping`. Writing always uses the current schema. Reading looks the
fingerprint up in the registry: the current schema reads directly, a known older (or
newer) version of the same record is resolved to the current one by fastavro's schema
resolution, anything else is a :class:`~topics.errors.DecodeError`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fastavro import schemaless_reader, schemaless_writer

from topics.errors import DecodeError, EncodeError
from topics.framing import HEADER_LEN, fingerprint_of, header
from topics.registry import SchemaRegistry
from topics.schemas import VersionedSchema

T = TypeVar("T")


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
            value = self._from_avro(record)
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
        return value

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
