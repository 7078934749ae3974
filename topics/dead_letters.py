"""The headers of a record on ``<ns>.inbox.dlq``: why it is there, where the original was.

Written by the workflow worker, read by ``chronik dlq tail``, ``chronik dlq redrive`` and by
any operator's tool (docs/runtime.md names them): one place for the names all must agree on.
"""

from __future__ import annotations

from collections.abc import Mapping

REASON = "chronik.reason"
TOPIC = "chronik.topic"
PARTITION = "chronik.partition"
OFFSET = "chronik.offset"
#: Present when the value was left out (too large to produce again); says what was cut.
TRUNCATED = "chronik.truncated"
ORIGINAL_SIZE = "chronik.original_size"
#: On an inbox record ``chronik dlq redrive`` moved back, and on its dead letter if the
#: workers refuse it again: where it was on the dead-letter topic (``topic[p]@offset``).
REDRIVEN_FROM = "chronik.redriven_from"


def source(headers: Mapping[str, bytes]) -> str:
    """Where a dead letter's original is, ``topic[partition]@offset`` (``?`` for a part
    its headers do not say: a dead letter another tool wrote)."""
    topic, partition, offset = (
        headers.get(name, b"?").decode("utf-8", "replace") for name in (TOPIC, PARTITION, OFFSET)
    )
    return f"{topic}[{partition}]@{offset}"
