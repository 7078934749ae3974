"""Typed errors of the topic layer, so callers (and the CLI) can tell what went wrong.

A record that does not decode must name where it sits (topic, partition, offset) so an
operator can find it, skip it or move it to the dead-letter topic; a topic that exists
with the wrong shape must name what differs, because silently using it would break the
partition-ownership invariant.
"""

from __future__ import annotations


class TopicsError(Exception):
    """Base of every error raised by :mod:`topics`."""


class DecodeError(TopicsError):
    """A record's bytes are not a record of the expected schema (corrupt, foreign, unknown)."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"cannot decode record at {self.location}: {reason}")

    @property
    def location(self) -> str:
        """``topic[partition]@offset``, with ``?`` for what the caller did not say."""
        topic = self.topic if self.topic is not None else "?"
        partition = self.partition if self.partition is not None else "?"
        offset = self.offset if self.offset is not None else "?"
        return f"{topic}[{partition}]@{offset}"


class EncodeError(TopicsError):
    """A value cannot be written with its schema (wrong type, a field out of range)."""


class TopicMismatchError(TopicsError):
    """An existing topic differs from the catalogue in a way Chronik cannot work with."""

    def __init__(self, topic: str, setting: str, expected: object, actual: object) -> None:
        self.topic = topic
        self.setting = setting
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"topic {topic} exists with {setting}={actual}, but Chronik needs {expected}"
        )


class KafkaUnavailableError(TopicsError):
    """The cluster did not answer in time (wrong bootstrap address, broker down, auth)."""


class TopicsMissingError(TopicsError):
    """The namespace's topics are not there: never created, or a typo in the namespace."""

    def __init__(self, namespace: str, missing: list[str]) -> None:
        self.namespace = namespace
        self.missing = missing
        super().__init__(
            f"namespace {namespace!r} lacks topic{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}: run "
            f"`chronik --namespace {namespace} topics create` (or check the namespace)"
        )


class KafkaConfigError(TopicsError, ValueError):
    """A librdkafka setting given to Chronik is not valid (an unknown property, a value
    librdkafka refuses, or one Chronik cannot work with)."""
