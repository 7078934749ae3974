"""Avro single-object encoding: how each record says which schema wrote it.

Layout (Avro specification, "Single-object encoding"): the two marker bytes ``C3 01``,
the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's parsing canonical
form, then the Avro binary body. Java's ``BinaryMessageEncoder``/``BinaryMessageDecoder``
read and write exactly this, so any Avro library can decode our topics with only the
schemas in ``avro/``. The fingerprint is what lets a reader resolve an older writer
schema instead of misreading it.
"""

from __future__ import annotations

MAGIC = b"\xc3\x01"
FINGERPRINT_LEN = 8
HEADER_LEN = len(MAGIC) + FINGERPRINT_LEN


def header(fingerprint: bytes) -> bytes:
    """The 10 bytes that precede every body written with the schema of ``fingerprint``."""
    if len(fingerprint) != FINGERPRINT_LEN:
        raise ValueError("an Avro fingerprint is 8 bytes")
    return MAGIC + fingerprint


def fingerprint_of(data: bytes) -> bytes:
    """The writer fingerprint of a single-object encoded record.

    Raises ``ValueError`` with the reason when ``data`` is not single-object encoded.
    """
    if len(data) < HEADER_LEN:
        raise ValueError(f"{len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    if data[:2] != MAGIC:
        raise ValueError(
            f"starts with 0x{data[:2].hex()}, not the single-object marker 0xc301"
            + (" (Confluent wire format?)" if data[:1] == b"\x00" else "")
        )
    return bytes(data[2:HEADER_LEN])
