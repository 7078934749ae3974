"""What an activity worker sends when an outcome is larger than Kafka takes."""

from __future__ import annotations

from runtime.messages import ActivityCompletedReport, ActivityFailedReport, ActivityHeartbeat
from runtime.payloads import Payload
from topics import serde
from workers.activity_worker import encode_report

LIMIT = 1_000


def test_a_report_within_the_limit_is_sent_as_is() -> None:
    report = ActivityCompletedReport("w", "run", 1, 1, Payload("json/plain", b'"ok"'))

    assert encode_report(report, LIMIT) == serde.encode_inbox(report)


def test_a_result_too_large_becomes_a_non_retryable_failure_that_says_so() -> None:
    report = ActivityCompletedReport("w", "run", 3, 2, Payload("json/plain", b"x" * 5_000))

    value = encode_report(report, LIMIT)

    assert value is not None and len(value) <= LIMIT
    sent = serde.decode_inbox(value)
    assert isinstance(sent, ActivityFailedReport)
    assert (sent.workflow_id, sent.run_id, sent.seq, sent.attempt) == ("w", "run", 3, 2)
    assert sent.failure.type == "RecordTooLarge"
    assert sent.failure.non_retryable  # the next attempt would produce it again
    assert "result is" in sent.failure.message and "the limit is 1,000" in sent.failure.message


def test_a_heartbeat_too_large_is_dropped() -> None:
    heartbeat = ActivityHeartbeat("w", "run", 1, 1, (Payload("json/plain", b"x" * 5_000),))

    assert encode_report(heartbeat, LIMIT) is None
