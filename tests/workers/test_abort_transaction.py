"""Aborting a failed transaction asks again while librdkafka says the abort may resume
(`workers.transaction.abort_transaction`). The producer's answers are made up here: a
broker that stalls for seconds at the right moment is not a test one can make repeatable."""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from workers.transaction import abort_transaction


class _Producer:
    """Raises each of ``errors`` from `abort_transaction` in turn, then aborts."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def abort_transaction(self, timeout: float) -> None:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))


def _timed_out() -> KafkaError:
    return KafkaError(
        KafkaError._TIMED_OUT, "Timed out waiting for operation to finish, retry call to resume",
        retriable=True,
    )  # fmt: skip


def test_an_abort_that_timed_out_is_asked_again() -> None:
    """Taken as fatal, it stopped a workflow worker after a broker stalled for 8 s."""
    producer = _Producer(_timed_out(), _timed_out())
    abort_transaction(cast(Producer, producer))
    assert producer.calls == 3


def test_an_abort_that_keeps_timing_out_is_raised() -> None:
    producer = _Producer(*[_timed_out() for _ in range(10)])
    with pytest.raises(KafkaException):
        abort_transaction(cast(Producer, producer), attempts=3)
    assert producer.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FENCED, "fenced", fatal=True),
        KafkaError(KafkaError._STATE, "no transaction"),
    ],
    ids=["fatal", "not-retriable"],
)
def test_an_abort_that_cannot_resume_is_raised_at_once(error: KafkaError) -> None:
    producer = _Producer(error)
    with pytest.raises(KafkaException):
        abort_transaction(cast(Producer, producer))
    assert producer.calls == 1
