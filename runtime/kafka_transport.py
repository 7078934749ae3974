"""The client's Kafka transport: requests to ``<ns>.inbox``, answers from ``<ns>.replies``.

A client is one producer and one reader of a single replies partition — the one its client
id hashes to — assigned at that partition's end when the client connects, so it sees
exactly the replies produced after it was there to ask. No consumer group: a client that
goes away leaves nothing to rebalance.

Waiting for a result can outlive a workflow worker (its waiters live in memory), so a
pending `GetWorkflowResult`, or a `StartWorkflow` with ``await_result``, is sent again every
``result_resend_s`` until answered (the owner answers a repeated start like a result
request); duplicates of the answer are ignored. The re-ask also renews the owner's lease
on the waiter (60 s by default, `runtime.engine.waiters`), so ``result_resend_s`` must stay
well below it.

A transport is not bound to the event loop that connected it: each delivery report and
each answer is handed to the loop of the future that waits for it. A client connected
under one ``asyncio.run`` and used under the next (or from loops of several threads)
otherwise fed every report to a closed loop, and its requests waited forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from runtime.errors import ClientClosedError, RPCError, RPCTimeoutError
from runtime.logging import kafka_logger
from runtime.messages import InboxMessage, Reply, ReplyBody, StatusRecord, awaits_outcome
from runtime.visibility import read_statuses
from topics import serde
from topics.catalogue import MAX_RECORD_BYTES, TopicNames
from topics.consumed import FETCH_WAIT_MS, Consumed, consume_available
from topics.errors import DecodeError, TopicsMissingError
from topics.partitioner import partition_for, producer_config
from topics.reachability import ensure_reachable
from topics.transient import watermarks

log = structlog.get_logger(__name__)

#: A future and what settles it (its delivery error, its answer, the error to raise).
_Item = tuple["asyncio.Future[Any]", Any]

#: How long a send waits before asking librdkafka again while its queue is full.
_QUEUE_FULL_PAUSE_S = 0.005
#: The longest a close takes: both threads' joins and the flush, 5 s each.
_CLOSE_S = 15.0


class PayloadTooLargeError(ValueError):
    """A request is larger than the broker accepts; it was not sent."""


class KafkaTransport:
    """Implements `runtime.client.Transport` over Kafka."""

    def __init__(
        self,
        bootstrap_servers: str,
        namespace: str,
        config: dict[str, Any],
        *,
        max_message_bytes: int = MAX_RECORD_BYTES,
        result_resend_s: float = 10.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.namespace = namespace
        self.kafka_config = {
            "bootstrap.servers": bootstrap_servers,
            "logger": kafka_logger(),
            **config,
        }
        self.client_id = f"client-{uuid.uuid4().hex}"
        self.max_message_bytes = max_message_bytes
        self._result_resend_s = result_resend_s
        self._names = TopicNames(namespace)
        self._producer = Producer({**producer_config(self.kafka_config), "linger.ms": 1})
        self._replies = Consumer(
            {
                **self.kafka_config,
                "group.id": f"{namespace}.clients",  # required by the client, never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            }
        )
        #: Requests waiting for their answer, and sends waiting for Kafka's acknowledgement
        #: (a close fails them rather than leave them waiting). Futures of any event loop:
        #: the reader thread, the poller thread and those loops all touch these, under the
        #: lock.
        self._waiting: dict[tuple[str, str], list[asyncio.Future[ReplyBody]]] = {}
        self._sending: set[asyncio.Future[None]] = set()
        self._lock = threading.Lock()
        #: Delivery reports the polling thread collected, not handed to their loops yet.
        self._delivery_reports: list[_Item] = []
        #: Why no answer can arrive any more (the reply reader failed, or the client closed).
        self._broken: RPCError | None = None
        self._stop = threading.Event()
        #: Set once a close has finished (``_stop`` is set when it begins).
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    async def connect(
        cls, bootstrap_servers: str, *, namespace: str = "chronik", **config: Any
    ) -> KafkaTransport:
        """Check the cluster answers, then start reading this client's replies partition."""
        await asyncio.to_thread(ensure_reachable, bootstrap_servers, config=config)
        transport = cls(bootstrap_servers, namespace, dict(config))
        try:
            await asyncio.to_thread(transport._start)
        except BaseException:
            # No thread runs yet: nothing but the two clients to let go of.
            transport._replies.close()
            transport._producer.close()
            raise
        return transport

    def _start(self) -> None:
        topic = self._names.replies
        metadata = self._replies.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        if not partitions:
            raise TopicsMissingError(self.namespace, [topic])
        partition = partition_for(self.client_id, len(partitions))
        _, end = watermarks(self._replies, TopicPartition(topic, partition))
        self._replies.assign([TopicPartition(topic, partition, end)])
        for target in (self._read_replies, self._serve_deliveries):
            thread = threading.Thread(target=target, name=f"chronik-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    # --- Transport -------------------------------------------------------------------

    async def send(self, message: InboxMessage) -> None:
        """Produce ``message`` and return once Kafka acknowledged it.

        While librdkafka's queue is full (`BufferError`: a burst of requests larger than
        ``queue.buffering.max.messages``) it waits for room, which the poller thread makes
        as deliveries come back, instead of raising that to the caller; a request's
        timeout bounds the wait.
        """
        if self._stop.is_set():
            raise ClientClosedError(f"the client is closed: {type(message).__name__} not sent")
        key, value = message.workflow_id.encode(), serde.encode_inbox(message)
        if (size := len(key) + len(value)) > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"{type(message).__name__} for workflow {message.workflow_id!r} is "
                f"{size} bytes encoded; the limit is {self.max_message_bytes} bytes"
            )
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_delivery(error: Any, _message: Any) -> None:  # in the thread that polls
            self._delivery_reports.append((delivered, error))

        # Registered before it is produced, under the lock `close` collects the sends
        # with: a close from another loop's thread either fails it or is seen here. A
        # send registered after that close had flushed and collected waited forever.
        with self._lock:
            if self._stop.is_set():
                raise ClientClosedError(f"the client was closed: {type(message).__name__} not sent")
            self._sending.add(delivered)
        try:
            while True:
                try:
                    self._producer.produce(
                        self._names.inbox, key=key, value=value, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    await asyncio.sleep(_QUEUE_FULL_PAUSE_S)
                if self._stop.is_set():
                    raise ClientClosedError(
                        f"the client was closed: {type(message).__name__} not sent"
                    )
            await delivered
        finally:
            with self._lock:
                self._sending.discard(delivered)

    async def request(self, message: InboxMessage, timeout: float | None) -> ReplyBody:
        request_id: str = getattr(message, "request_id", "")
        if not request_id:
            raise ValueError(f"{type(message).__name__} is not a request: it has no request_id")
        if self._broken is not None:
            raise self._broken
        answer: asyncio.Future[ReplyBody] = asyncio.get_running_loop().create_future()
        # Keyed by workflow and request: a caller may reuse a request id for another
        # workflow (the owner deduplicates per workflow), or send the same request twice at
        # once (an idempotent retry); every one of them hears the answer.
        key = (message.workflow_id, request_id)
        with self._lock:
            # Again under the lock: the reader thread fails the waiting requests itself,
            # and one checked above but not registered yet would wait for nothing.
            if self._broken is not None:
                raise self._broken
            self._waiting.setdefault(key, []).append(answer)
        try:
            # The timeout covers the send too: a broker that does not answer would otherwise
            # hold the request for librdkafka's message.timeout.ms (5 minutes).
            return await asyncio.wait_for(self._send_and_wait(message, answer), timeout)
        except TimeoutError:
            if awaits_outcome(message):  # answered when the run closes: it may just run on
                raise RPCTimeoutError(
                    f"workflow {message.workflow_id!r} did not close within {timeout}s "
                    "(or no workflow worker of namespace "
                    f"{self.namespace!r} is running); ask again for its result"
                ) from None
            raise RPCTimeoutError(
                f"no answer to {type(message).__name__} for workflow {message.workflow_id!r} "
                f"within {timeout}s: is a workflow worker running for namespace "
                f"{self.namespace!r}? The request stays on the inbox and takes effect "
                f"when one does (request id {request_id}: a retry with it is deduplicated)"
            ) from None
        finally:
            with self._lock:
                waiting = self._waiting.get(key, [])
                waiting.remove(answer)
                if not waiting:
                    self._waiting.pop(key, None)

    async def _send_and_wait(
        self, message: InboxMessage, answer: asyncio.Future[ReplyBody]
    ) -> ReplyBody:
        await self.send(message)
        if awaits_outcome(message):
            return await self._await_result(message, answer)
        return await answer

    async def _await_result(
        self, message: InboxMessage, answer: asyncio.Future[ReplyBody]
    ) -> ReplyBody:
        """Wait for an answer that comes when a run closes, re-asking in case a worker died."""
        while True:
            done, _ = await asyncio.wait({answer}, timeout=self._result_resend_s)
            if done:
                return answer.result()
            await self.send(message)

    async def workflow_statuses(self) -> list[StatusRecord]:
        if self._stop.is_set():
            raise ClientClosedError("the client is closed: workflows not listed")
        return await asyncio.to_thread(read_statuses, self.kafka_config, self._names)

    async def close(self) -> None:
        """Stop reading and sending; every request still waiting raises `ClientClosedError`.

        Idempotent: a close while another is under way returns once that one is done (it
        returned at once, and a caller that then ended its loop cut the first one short).
        Records already handed to the producer get 5 s to reach Kafka.
        """
        if self._stop.is_set():
            if not self._closed.is_set():
                await asyncio.to_thread(self._closed.wait, _CLOSE_S)
            return
        self._stop.set()
        try:
            for thread in self._threads:
                await asyncio.to_thread(thread.join, 5)
            await asyncio.to_thread(self._producer.flush, 5)
            self._replies.close()
            reports, self._delivery_reports = self._delivery_reports, []
            _hand_over(_settle_sends, reports)  # what the flush delivered, or failed to
            closed = ClientClosedError("the client was closed while the request waited")
            self._fail_answers(closed)
            with self._lock:
                sending = list(self._sending)
            _hand_over(_fail_all, [(future, closed) for future in sending])
        finally:
            self._closed.set()

    # --- background threads -------------------------------------------------------------

    # Both threads hand what they got to the event loop in one call per batch: waking the
    # loop once per record cost the driving process a write and a wake-up each under load.

    def _serve_deliveries(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            if self._delivery_reports:
                reports, self._delivery_reports = self._delivery_reports, []
                _hand_over(_settle_sends, reports)

    def _read_replies(self) -> None:
        try:
            while not self._stop.is_set():
                replies = []
                for message in consume_available(self._replies, 100, 0.1):
                    if message.error() is not None or message.key() != self.client_id.encode():
                        continue
                    record = Consumed.of(message)
                    try:
                        replies.append(record.decode(serde.decode_reply))
                    except DecodeError as error:
                        log.warning("undecodable reply ignored", reason=str(error))
                if replies:
                    self._deliver(replies)
        except Exception as error:  # no answer can arrive any more: say so to every caller
            log.exception("the client's reply reader failed")
            self._fail_answers(RPCError(f"the client's reply reader failed: {error!r}"))

    def _fail_answers(self, error: RPCError) -> None:
        """Every request waiting for an answer, and every later one, raises ``error``.

        Set and collected under the lock that registers requests (`request`): from the
        reader thread, a request registering meanwhile is either collected here or sees
        the error."""
        with self._lock:
            self._broken = error
            failed = [(future, error) for futures in self._waiting.values() for future in futures]
        _hand_over(_fail_all, failed)

    def _deliver(self, replies: list[Reply]) -> None:
        """Resolve the requests these replies answer (from any thread), on their loops."""
        with self._lock:
            answered = [
                (future, reply.body)
                for reply in replies
                for future in self._waiting.get((reply.workflow_id, reply.request_id), ())
            ]
        _hand_over(_resolve_all, answered)


def _hand_over(settle: Callable[[list[_Item]], None], items: Sequence[_Item]) -> None:
    """Run ``settle`` on each future's own event loop, once per loop for the batch.

    Called from the client's threads and from any loop: a future may only be resolved in
    its loop's thread, and waking a loop once per record cost the driving process a write
    and a wake-up each under load. Futures of a loop that is closed have no one waiting.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
    for item in items:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, batch in by_loop.items():
        if loop is running:
            settle(batch)
            continue
        with contextlib.suppress(RuntimeError):  # closed: nothing waits there any more
            loop.call_soon_threadsafe(settle, batch)


def _settle_sends(reports: list[_Item]) -> None:
    """Resolve each sent request's future with its delivery report (an error or None)."""
    for future, error in reports:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(KafkaException(error))


def _resolve_all(answers: list[_Item]) -> None:
    """Answer each request with its reply's body."""
    for future, body in answers:
        if not future.done():
            future.set_result(body)


def _fail_all(failures: list[_Item]) -> None:
    """Fail each future with its error."""
    for future, error in failures:
        if not future.done():
            future.set_exception(error)
