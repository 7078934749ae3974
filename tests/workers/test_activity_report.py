"""What an activity worker sends when an outcome is larger than Kafka takes."""

from __future__ import annotations

from runtime.messages import ActivityCompletedReport, ActivityFailedReport, ActivityHeartbeat
from runtime.payloads import Failure, Payload
from topics import serde
from topics.catalogue import MAX_RECORD_BYTES
from workers.activity_attempts import CancelReason, outcome, outcome_label
from workers.activity_reports import encode_report, report_limit

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


def test_a_heartbeat_too_large_goes_without_its_details() -> None:
    """Liveness is what a heartbeat timeout watches: dropped, a live activity timed out."""
    heartbeat = ActivityHeartbeat("w", "run", 1, 1, (Payload("json/plain", b"x" * 5_000),))

    sent = serde.decode_inbox(encode_report(heartbeat, LIMIT))

    assert sent == ActivityHeartbeat("w", "run", 1, 1, ())


def test_a_failure_too_large_keeps_its_type_and_retryability_with_less_text() -> None:
    """A retryable error whose text is large (a response body in its message, a deep stack)
    became a non-retryable `RecordTooLarge`: the workflow failed instead of retrying, and
    its `except` on the error's type no longer matched."""
    cause = Failure(
        "connection reset " + "c" * 3_000, type="ConnectionError", stack_trace="s" * 3_000
    )
    failure = Failure(
        "upstream answered 503: " + "x" * 5_000,
        type="Unavailable",
        stack_trace="t" * 5_000,
        details=(Payload("json/plain", b"d" * 5_000),),
        cause=cause,
    )
    report = ActivityFailedReport("w", "run", 3, 2, failure)

    value = encode_report(report, LIMIT * 2)

    assert value is not None and len(value) <= LIMIT * 2
    sent = serde.decode_inbox(value)
    assert isinstance(sent, ActivityFailedReport)
    kept = sent.failure
    assert (kept.type, kept.kind, kept.non_retryable) == ("Unavailable", "application", False)
    assert kept.message.startswith("upstream answered 503: xxx")
    assert "cut" in kept.message and (kept.stack_trace, kept.details) == ("", ())
    assert kept.cause is not None and kept.cause.type == "ConnectionError"


def test_a_failure_too_large_even_cut_becomes_record_too_large() -> None:
    failure = Failure("boom", type="Deep")
    for n in range(50):  # a cause chain longer than any cut leaves room for
        failure = Failure(f"level {n} " + "m" * 900, type="Deep", cause=failure)

    value = encode_report(ActivityFailedReport("w", "run", 3, 2, failure), LIMIT * 2)

    assert value is not None
    sent = serde.decode_inbox(value)
    assert isinstance(sent, ActivityFailedReport) and sent.failure.type == "RecordTooLarge"


def test_the_metrics_name_how_an_attempt_ended() -> None:
    completed = ActivityCompletedReport("wf", "run", 1, 1, None)
    cancelled = ActivityFailedReport("wf", "run", 1, 1, Failure("stop", kind="cancelled"))
    failed = ActivityFailedReport("wf", "run", 1, 1, Failure("boom"))
    assert outcome_label(completed) == "completed"
    assert outcome_label(failed) == "failed"
    assert outcome_label(outcome(cancelled, CancelReason.REQUESTED)) == "cancelled"
    assert outcome_label(outcome(cancelled, CancelReason.HEARTBEAT)) == "timeout"
    assert outcome_label(outcome(cancelled, CancelReason.STOPPING)) == "stopped"


def test_a_failure_with_text_utf8_refuses_keeps_its_type_and_retryability_escaped() -> None:
    """An exception message with a file name's surrogate escapes (``os.listdir`` of a name
    that is not UTF-8) made the report unencodable: the worker then reported nothing, and
    the workflow waited for its activity's timeout."""
    cause = Failure("read /data/\udcff.csv", type="OSError")
    failure = Failure("cannot load \udcff.csv", type="LoadError", stack_trace="\udcff", cause=cause)

    sent = serde.decode_inbox(encode_report(ActivityFailedReport("w", "run", 3, 2, failure)))

    assert isinstance(sent, ActivityFailedReport)
    kept = sent.failure
    assert (kept.type, kept.kind, kept.non_retryable) == ("LoadError", "application", False)
    assert kept.message == "cannot load \\udcff.csv" and kept.stack_trace == "\\udcff"
    assert kept.cause is not None and kept.cause.message == "read /data/\\udcff.csv"


def test_a_result_that_cannot_be_encoded_becomes_a_non_retryable_failure_that_says_why() -> None:
    """A payload codec of the application's named its encoding with text UTF-8 refuses."""
    report = ActivityCompletedReport("w", "run", 3, 2, Payload("binary/\udcff", b"data"))

    sent = serde.decode_inbox(encode_report(report))

    assert isinstance(sent, ActivityFailedReport)
    assert (sent.workflow_id, sent.run_id, sent.seq, sent.attempt) == ("w", "run", 3, 2)
    assert sent.failure.type == "ReportNotEncodable" and sent.failure.non_retryable
    assert "result cannot be encoded" in sent.failure.message
    assert "surrogates not allowed" in sent.failure.message


def test_the_report_limit_follows_a_lower_message_max_bytes() -> None:
    """librdkafka refuses a record over ``message.max.bytes`` in ``produce`` itself: a
    result under our own limit but over a lower one set with ``-X`` was lost."""
    assert report_limit({}) == MAX_RECORD_BYTES
    assert report_limit({"message.max.bytes": "50000"}) == 49_000
    assert report_limit({"message.max.bytes": 10_000_000}) == MAX_RECORD_BYTES


def test_the_report_limit_follows_a_lower_max_message_bytes_of_the_inbox() -> None:
    """The broker refuses a batch over the topic's ``max.message.bytes`` whole, whatever
    the producer allows itself."""
    assert report_limit({}, 50_000) == 49_000
    assert report_limit({"message.max.bytes": 20_000}, 50_000) == 19_000
    assert report_limit({}, 1_048_588) == MAX_RECORD_BYTES
