"""The activity worker's producer of reports, and what it does when Kafka refuses one.

An outcome is as good as lost when its report does not reach the inbox: the workflow
waits for its activity's timeout, or times out an activity that completed. So a report is
never dropped for a reason that passes: one ``produce`` refuses for a moment is offered
again, one Kafka did not take is produced again, and one the broker refused as too large
is produced again within the inbox's ``max.message.bytes`` read anew — ``on_delivered``
(which lets the worker commit the attempt's offset) runs only once Kafka has a copy. This
is the worker's only link to the producer, apart from its poll loop, dispatch and
offsets (`workers.activity_worker`); what a report's record is comes from
`workers.activity_reports`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from topics.admin import TopicAdmin
from topics.errors import KafkaUnavailableError
from topics.partitioner import producer_config
from topics.transient import is_fatal, is_transient, produce_when_room
from workers.activity_reports import FRAMING_BYTES, Outcome, Report, encode_report, report_limit

log = structlog.get_logger(__name__)

#: How long a report the producer refuses for a passing reason (a topic's metadata not
#: there yet, a partition's leader moving) is offered again before the worker gives up
#: on it, and the longest pause between two offers (seconds).
REPORT_RETRY_S = 30.0
_REPORT_RETRY_PAUSE_S = 1.0
#: librdkafka's ``batch.size`` when none is set.
_BATCH_BYTES = 1_000_000


class ReportSender:
    """Produces an activity worker's reports to the inbox, within its limit.

    It belongs to the worker's event loop: delivery callbacks run in `poll`, retries are
    scheduled on the loop. The admin calls that read the inbox's ``max.message.bytes``
    block, so they run in ``poller`` (the worker's polling thread), or are called there.
    """

    def __init__(
        self, settings: Mapping[str, Any], inbox: str, admin: TopicAdmin, poller: Executor
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        self._admin = admin
        self._poller = poller
        self._producer = _report_producer(settings)
        self._limit = report_limit(settings)
        #: The read of the inbox's ``max.message.bytes`` under way after a refusal, which
        #: every report of the refused batch waits for.
        self._rereading: asyncio.Future[int] | None = None
        #: Reports waiting for that read, to be produced again.
        self._resending: set[asyncio.Task[None]] = set()
        #: The fatal error ``produce`` raised, which stops the worker at the next poll.
        self._failed: KafkaException | None = None

    def follow_inbox_limit(self) -> None:
        """Keep reports and their batches within the inbox's ``max.message.bytes``, before
        anything is produced (in the polling thread: the admin call blocks).

        An operator may set that topic config below librdkafka's ``message.max.bytes``:
        the broker then refused a large report's whole batch, the worker produced it
        again forever, and the workflow waited. Within the limit, an outcome too large
        goes as `RecordTooLarge` (`encode_report`); the producer is made anew with its
        ``batch.size`` within it too, so that small reports batched together are not
        refused either."""
        topic_max = self._inbox_max_bytes()
        if topic_max is None:
            return
        self._limit = report_limit(self._settings, topic_max)
        if topic_max - FRAMING_BYTES < _batch_bytes(self._settings):
            self._producer = _report_producer(self._settings, topic_max)

    def _inbox_max_bytes(self) -> int | None:
        """The inbox's ``max.message.bytes``, asked with the admin's timeout like the task
        queue's check before it; None when Kafka does not say (logged): the producer's
        own settings then bound the reports, and a refusal re-reads it (`_resend_refused`)."""
        try:
            topic_max = self._admin.max_message_bytes(self._inbox)
        except KafkaUnavailableError as error:
            log.warning(
                "the inbox's max.message.bytes could not be read: reports are limited by "
                "the producer's settings",
                error=str(error), limit=self._limit,
            )  # fmt: skip
            return None
        return topic_max

    def _read_limit(self) -> int:
        """The report limit, after reading the inbox's ``max.message.bytes`` again (in the
        polling thread); it only goes down: the producer's batches were sized for it."""
        topic_max = self._inbox_max_bytes()
        if topic_max is not None:
            self._limit = min(self._limit, report_limit(self._settings, topic_max))
        return self._limit

    def send(self, message: Report, on_delivered: Callable[[], None] | None = None) -> None:
        """Produce ``message``; ``on_delivered`` runs (in the loop's poll) once Kafka has it.

        The record is encoded within what the producer takes (`encode_report`): an outcome
        that cannot be sent as it is goes as a failure that says why. What the producer
        refuses is handled by `_produce`.
        """
        value = encode_report(message, self._limit)
        self._produce(message, value, on_delivered, time.monotonic() + REPORT_RETRY_S, 0.05)

    def poll(self) -> None:
        """Run the delivery callbacks of what Kafka answered; raise a fatal error
        ``produce`` met (once, as a delivery's is raised): the producer can send nothing
        more, and the worker stops."""
        self._producer.poll(0)
        if (failed := self._failed) is not None:
            self._failed = None
            raise failed

    async def flush(self, timeout_s: float) -> None:
        """`Producer.flush` in slices: one call blocked the loop for as long as Kafka took,
        and the loop watch blamed the activities for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            # Nothing left to deliver, nor waiting to be produced again (`_resend_refused`).
            if not self._producer.flush(0.05) and not self._resending:
                return
            await asyncio.sleep(0)  # the loop runs between slices

    def _produce(
        self,
        message: Report,
        value: bytes,
        on_delivered: Callable[[], None] | None,
        deadline: float,
        pause_s: float,
    ) -> None:
        """Produce ``value``, offered again while the producer refuses it for a passing
        reason, until ``deadline``; given up on then, or at once for any other reason,
        and logged: ``on_delivered`` never runs, so its task's offset stays uncommitted.

        A report Kafka did not take (librdkafka gave up after ``message.timeout.ms``) is
        produced again, its offset uncommitted until one copy is in: counting it as
        delivered lost the result for good, the workflow then waiting for a start-to-close
        retry — or, with only a schedule-to-close timeout, timing out an activity that had
        completed. The engine ignores a second copy of a report. A fatal producer error
        stops the worker (raised out of the poll), its offset open — one ``produce`` raised
        too (kept for `poll` to raise): it only failed that attempt, and the worker ran on
        with a producer that could send nothing more.
        """

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                if on_delivered is not None:
                    on_delivered()
                return
            if is_fatal(error):  # the producer is unusable: stop; the task's offset stays open
                raise KafkaException(error)
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                self._refused_too_large(message, value, on_delivered)
                return
            log.warning(
                "report not delivered: producing it again",
                error=str(error), report=type(message).__name__,
            )  # fmt: skip
            self._produce(message, value, on_delivered, time.monotonic() + REPORT_RETRY_S, 0.05)

        try:
            produce_when_room(
                self._producer,
                self._inbox,
                key=message.workflow_id.encode(),
                value=value,
                on_delivery=delivered,
            )
        except KafkaException as refused:
            error: KafkaError = refused.args[0]
            if is_fatal(error) or not is_transient(error) or time.monotonic() >= deadline:
                _log_not_produced(message, error)
                if is_fatal(error):
                    self._failed = refused
                return
            loop = asyncio.get_running_loop()  # offered again without blocking the loop
            again = min(pause_s * 2, _REPORT_RETRY_PAUSE_S)
            loop.call_later(pause_s, self._produce, message, value, on_delivered, deadline, again)

    def _refused_too_large(
        self, message: Report, value: bytes, on_delivered: Callable[[], None] | None
    ) -> None:
        """The broker refused the batch holding ``message`` as larger than the inbox's
        ``max.message.bytes`` (lowered since the worker read it, or not read): produced
        again as it was, it was refused again forever. It is produced again once the
        limit is read anew (`_resend_refused`), off the loop."""
        log.warning(
            "report refused by the broker as too large: the inbox's max.message.bytes is "
            "read again",
            report=type(message).__name__, workflow_id=message.workflow_id, seq=message.seq,
            attempt=message.attempt, size=len(value), limit=self._limit,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(
            self._resend_refused(message, value, on_delivered)
        )
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _resend_refused(
        self, message: Report, value: bytes, on_delivered: Callable[[], None] | None
    ) -> None:
        """Produce a refused report again under the limit read anew: one over it is
        encoded again within it (an outcome as `RecordTooLarge`, a heartbeat without its
        details); one within it only shared the refused batch, and goes as it was."""
        limit = await self._reread_limit()
        if len(message.workflow_id.encode()) + len(value) > limit:
            value = encode_report(message, limit)
        self._produce(message, value, on_delivered, time.monotonic() + REPORT_RETRY_S, 0.05)

    async def _reread_limit(self) -> int:
        """`_read_limit`, in the polling thread; one read for all the reports of a refused
        batch, which are refused together."""
        if self._rereading is None:
            loop = asyncio.get_running_loop()
            reading = asyncio.ensure_future(loop.run_in_executor(self._poller, self._read_limit))
            self._rereading = reading
            reading.add_done_callback(self._reread_done)
        return await asyncio.shield(self._rereading)

    def _reread_done(self, _reading: asyncio.Future[int]) -> None:
        self._rereading = None


def _log_not_produced(message: Report, error: KafkaError) -> None:
    """Name a report the producer refused for good: an outcome's attempt is not finished
    (its offset stays uncommitted) and runs again on its partition's next owner, or the
    workflow's timeout and retry policy take over meanwhile."""
    then = (
        "its task's offset stays uncommitted, the attempt runs again on the partition's next owner"
        if isinstance(message, Outcome)
        else "it is dropped"
    )
    log.error(
        f"activity report not produced: {then}",
        report=type(message).__name__, error=str(error), workflow_id=message.workflow_id,
        run_id=message.run_id, seq=message.seq, attempt=message.attempt,
    )  # fmt: skip


def _batch_bytes(settings: Mapping[str, Any]) -> int:
    """The largest batch the producer of ``settings`` builds."""
    return int(settings.get("batch.size", _BATCH_BYTES))


def _report_producer(settings: Mapping[str, Any], topic_max_bytes: int | None = None) -> Producer:
    """The producer of reports; with ``topic_max_bytes``, its batches stay within it: the
    broker refuses a batch over the topic's ``max.message.bytes`` whole, small reports
    in it too."""
    config = {**producer_config(settings), "linger.ms": 2}
    if topic_max_bytes is not None:
        config["batch.size"] = max(1, min(_batch_bytes(settings), topic_max_bytes - FRAMING_BYTES))
    return Producer(config)
