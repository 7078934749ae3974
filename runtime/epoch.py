"""Epoch milliseconds, the one unit of time on the wire and in every history, as a datetime.

Every time Chronik records is an integer of UTC milliseconds, which any language reads
without a time-zone rule; the user-facing API (``workflow.now()``, ``WorkflowInfo``,
``activity.info()``) hands out aware UTC datetimes. This is the one conversion between
them, so that no caller builds a naive datetime or one in the host's local zone.
"""

from __future__ import annotations

from datetime import UTC, datetime


def datetime_of(epoch_ms: int) -> datetime:
    """The aware UTC datetime of ``epoch_ms``."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
