"""An activity's reports as inbox records, always within what Kafka takes.

A report the producer or the broker refuses is lost, and the workflow waits for its
activity's timeout; one that cannot be encoded at all raised, and was lost the same way.
So every report is encoded here, pure (no Kafka I/O), into a record within the limit of
the producer's settings and the inbox's ``max.message.bytes`` (`report_limit`): an outcome
that cannot go as it is goes as a failure that says why, a heartbeat without its details.
`workers.report_sender` produces what this encodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from runtime.messages import (
    ActivityCompletedReport,
    ActivityFailedReport,
    ActivityHeartbeat,
    ActivityStartedReport,
    InboxMessage,
)
from runtime.payloads import Failure
from topics import serde
from topics.catalogue import MAX_RECORD_BYTES
from topics.errors import EncodeError

log = structlog.get_logger(__name__)

#: How an attempt ends, and every report the worker sends.
Outcome = ActivityCompletedReport | ActivityFailedReport
Report = Outcome | ActivityHeartbeat | ActivityStartedReport

#: librdkafka's ``message.max.bytes`` when none is set, and what `MAX_RECORD_BYTES` leaves
#: below it for a batch's framing.
_MESSAGE_MAX_BYTES = 1_000_000
FRAMING_BYTES = _MESSAGE_MAX_BYTES - MAX_RECORD_BYTES


def report_limit(settings: Mapping[str, Any], topic_max_bytes: int | None = None) -> int:
    """The largest report (key and value) the producer of ``settings`` takes, and the
    inbox too when its ``max.message.bytes`` is known: a lower ``message.max.bytes``
    (``-X``) makes librdkafka refuse a larger record in `produce` itself, and the worker
    then had no report to send at all; a lower topic config makes the broker refuse it."""
    message_max = int(settings.get("message.max.bytes", _MESSAGE_MAX_BYTES))
    limits = [MAX_RECORD_BYTES, message_max - FRAMING_BYTES]
    if topic_max_bytes is not None:
        limits.append(topic_max_bytes - FRAMING_BYTES)
    return min(limits)


def encode_report(message: InboxMessage, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The report's inbox record, within what Kafka takes.

    A failure too large loses its stack traces and details, and its messages are cut: it
    keeps its kind, type and retryability, which decide the retry and what the workflow's
    `except` matches. A result too large — or a failure still too large — becomes a
    non-retryable failure that says so (retrying would produce it again), and a heartbeat
    too large is sent without its details: dropping it, the engine heard no heartbeat
    and timed out a live activity, every attempt alike. A report that cannot be encoded
    at all is made encodable the same way (`_encodable`).
    """
    try:
        value = serde.encode_inbox(message)
    except EncodeError as error:
        return encode_report(_encodable(message, error), limit)
    key_size = len(message.workflow_id.encode())
    if key_size + len(value) <= limit:
        return value
    if isinstance(message, ActivityFailedReport):
        cut = replace(message, failure=_cut(message.failure, limit, len(value)))
        if key_size + len(cut_value := serde.encode_inbox(cut)) <= limit:
            return cut_value
    if isinstance(message, ActivityHeartbeat):
        log.warning(
            "heartbeat details too large to send: the heartbeat goes without them",
            workflow_id=message.workflow_id, seq=message.seq, size=len(value), limit=limit,
        )  # fmt: skip
        return serde.encode_inbox(replace(message, details=()))
    if not isinstance(message, Outcome):
        raise TypeError(f"not an activity report: {type(message).__name__}")
    size = f"is {len(value):,} bytes encoded; the limit is {limit:,}"
    return serde.encode_inbox(_failed_as(message, size, "RecordTooLarge"))


def _encodable(message: InboxMessage, error: EncodeError) -> InboxMessage:
    """``message`` in a form that encodes, saying why it had to change.

    The usual cause is text UTF-8 refuses: an exception message or stack trace holding a
    file name's surrogate escapes (``os.listdir`` of a name that is not UTF-8). Such a
    failure keeps its kind, type and retryability, its text escaped (``\\udcff``);
    anything else becomes a non-retryable ``ReportNotEncodable`` failure naming the
    error. Raising instead lost the outcome, and the workflow waited for its timeout.
    """
    if isinstance(message, ActivityFailedReport):
        escaped = replace(message, failure=_escaped(message.failure))
        if escaped != message:  # else escaping did not help: no second pass
            return escaped
    if isinstance(message, ActivityHeartbeat) and message.details:
        return replace(message, details=())
    if not isinstance(message, Outcome):
        raise error
    log.error(
        "activity report cannot be encoded: a failure that says why is sent instead",
        workflow_id=message.workflow_id, seq=message.seq, attempt=message.attempt,
        error=str(error),
    )  # fmt: skip
    return _failed_as(message, f"cannot be encoded: {_escape(str(error))}", "ReportNotEncodable")


def _failed_as(message: Outcome, why: str, failure_type: str) -> ActivityFailedReport:
    """The non-retryable failure sent for an outcome that cannot go as it is: retrying
    would run the activity's side effects again for the same refusal."""
    what = "result" if isinstance(message, ActivityCompletedReport) else "failure"
    failure = Failure(f"the activity's {what} {why}", type=failure_type, non_retryable=True)
    return ActivityFailedReport(
        message.workflow_id, message.run_id, message.seq, message.attempt, failure
    )


def _escaped(failure: Failure) -> Failure:
    """``failure`` and its causes with every text UTF-8 can encode."""
    cause = None if failure.cause is None else _escaped(failure.cause)
    return replace(
        failure,
        message=_escape(failure.message),
        type=_escape(failure.type),
        stack_trace=_escape(failure.stack_trace),
        cause=cause,
    )


def _escape(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut(failure: Failure, limit: int, size: int) -> Failure:
    """``failure`` and its causes without stack traces or details, each message cut so that
    all of them take at most half of ``limit``; the first message says so."""
    chain = []
    link: Failure | None = failure
    while link is not None:
        chain.append(link)
        link = link.cause
    budget = max(200, limit // (2 * len(chain)))
    cut: Failure | None = None
    for link in reversed(chain):
        text = link.message.encode()
        message = link.message
        if len(text) > budget:
            message = text[:budget].decode(errors="ignore") + f"… ({len(text):,} bytes, cut)"
        cut = replace(link, message=message, stack_trace="", details=(), cause=cut)
    assert cut is not None
    note = f" [the failure was {size:,} bytes encoded: stack traces and details dropped]"
    return replace(cut, message=cut.message + note)
