"""Retry policies and the backoff math the engine uses to decide the next attempt.

Pure functions of the policy, the attempt number and the failure: a retry is a decision
recorded in history (`ActivityAttemptFailed.next_attempt_delay_ms`), never a sleep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from runtime.events import RetryPolicyRecord
from runtime.payloads import Failure


@dataclass(frozen=True)
class RetryPolicy:
    """Temporal's retry policy. ``maximum_attempts=0`` means unlimited.

    ``maximum_interval`` defaults to 100 x ``initial_interval``.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: Sequence[str] = field(default_factory=tuple)

    def to_record(self) -> RetryPolicyRecord:
        initial_ms = _ms(self.initial_interval)
        maximum_ms = _ms(self.maximum_interval) if self.maximum_interval else initial_ms * 100
        return RetryPolicyRecord(
            initial_interval_ms=initial_ms,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval_ms=maximum_ms,
            maximum_attempts=self.maximum_attempts,
            non_retryable_error_types=tuple(self.non_retryable_error_types),
        )

    @staticmethod
    def from_record(record: RetryPolicyRecord) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(milliseconds=record.initial_interval_ms),
            backoff_coefficient=record.backoff_coefficient,
            maximum_interval=timedelta(milliseconds=record.maximum_interval_ms),
            maximum_attempts=record.maximum_attempts,
            non_retryable_error_types=record.non_retryable_error_types,
        )


#: What an activity gets without an explicit policy (Temporal's default: retry forever).
DEFAULT_ACTIVITY_RETRY = RetryPolicy()


#: The longest delay of a policy without a maximum interval: a backoff that grows
#: without bound would overflow, and no retry is worth waiting a year for.
_UNCAPPED_MS = 365 * 24 * 3600 * 1000


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def backoff_ms(policy: RetryPolicyRecord, attempt: int) -> int:
    """Delay before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    try:
        delay = policy.initial_interval_ms * policy.backoff_coefficient ** (attempt - 1)
    except OverflowError:  # attempt 1,025 of a doubling backoff: far past any maximum
        delay = math.inf
    cap = policy.maximum_interval_ms or _UNCAPPED_MS
    return int(min(delay, cap))


def next_attempt_delay_ms(
    policy: RetryPolicyRecord | None, attempt: int, failure: Failure
) -> int | None:
    """The backoff before the next attempt, or None when the failure is final."""
    if policy is None or failure.non_retryable:
        return None
    if failure.kind == "application" and failure.type in policy.non_retryable_error_types:
        return None
    if policy.maximum_attempts > 0 and attempt >= policy.maximum_attempts:
        return None
    return backoff_ms(policy, attempt)
