"""The Kafka transport's own waiting logic: re-asking while a run is open, timeouts that
cover the send, a close that ends every wait, the size limit.

No broker: `send` is replaced where a reply is needed (it is handed over the way the reader
thread would); elsewhere records go to a producer whose broker never answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from runtime import kafka_transport
from runtime.converter import DataConverter
from runtime.errors import ClientClosedError, RPCError, RPCTimeoutError
from runtime.kafka_transport import KafkaTransport, PayloadTooLargeError
from runtime.messages import (
    GetWorkflowResult,
    InboxMessage,
    Reply,
    SignalWorkflow,
    StartWorkflow,
    UpdateWorkflow,
    WorkflowOutcome,
    WorkflowStatus,
)
from topics import serde

OUTCOME = WorkflowOutcome("run-1", WorkflowStatus.COMPLETED, DataConverter().encode_one(1), None)


@pytest.fixture
async def transport() -> AsyncIterator[KafkaTransport]:
    # Nothing listens on port 1 and nothing is produced: no broker is ever reached.
    kafka = KafkaTransport("127.0.0.1:1", "ns", {}, result_resend_s=0.01)
    try:
        yield kafka
    finally:
        await kafka.close()


def _answer_on_send(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch, answer_at: int
) -> list[InboxMessage]:
    """Replace `send`: record each message and deliver the outcome with the `answer_at`-th."""
    sent: list[InboxMessage] = []

    async def send(message: InboxMessage) -> None:
        sent.append(message)
        if len(sent) == answer_at:
            transport._deliver([Reply(transport.client_id, "r1", "w", OUTCOME)])

    monkeypatch.setattr(transport, "send", send)
    return sent


def _start(transport: KafkaTransport, *, await_result: bool) -> StartWorkflow:
    return StartWorkflow(
        "w", "T", "q", (), "r1", reply_to=transport.client_id, await_result=await_result
    )


@pytest.mark.parametrize("kind", ["awaiting start", "result request", "update"])
async def test_a_request_for_an_outcome_is_re_sent_until_answered(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    sent = _answer_on_send(transport, monkeypatch, answer_at=3)
    asks: dict[str, InboxMessage] = {
        "awaiting start": _start(transport, await_result=True),
        "result request": GetWorkflowResult("w", None, "r1", transport.client_id),
        "update": UpdateWorkflow("w", None, "u1", "set", (), "r1", transport.client_id),
    }
    message = asks[kind]
    assert await transport.request(message, 5.0) == OUTCOME
    assert sent == [message] * 3  # the same message: the owner takes it as a re-ask


async def test_a_plain_start_is_sent_once(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _answer_on_send(transport, monkeypatch, answer_at=0)
    start = _start(transport, await_result=False)
    with pytest.raises(RPCTimeoutError):
        await transport.request(start, 0.1)
    assert sent == [start]


async def test_the_timeout_covers_a_send_kafka_never_acknowledges(
    transport: KafkaTransport,
) -> None:
    """No broker answers: the produce waits for librdkafka's message.timeout.ms (5 min)."""
    with pytest.raises(RPCTimeoutError):
        await asyncio.wait_for(transport.request(_signal(transport), 0.2), 10)


async def test_closing_ends_every_wait_with_client_closed(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    sending = asyncio.create_task(transport.send(_signal(transport, "r2")))
    _answer_on_send(transport, monkeypatch, answer_at=0)
    waiting = asyncio.create_task(transport.request(_start(transport, await_result=True), None))
    await asyncio.sleep(0.05)
    await transport.close()
    for task in (sending, waiting):
        with pytest.raises(ClientClosedError):
            await asyncio.wait_for(task, 10)
    monkeypatch.undo()
    with pytest.raises(ClientClosedError, match="SignalWorkflow not sent"):
        await transport.send(_signal(transport))
    await transport.close()  # again: nothing left to do


async def test_the_size_limit_counts_the_key(transport: KafkaTransport) -> None:
    transport.max_message_bytes = len(serde.encode_inbox(_signal(transport)))
    with pytest.raises(PayloadTooLargeError, match="the limit is"):
        await transport.send(_signal(transport))  # the value fits, with its key it does not


def _signal(transport: KafkaTransport, request_id: str = "r1") -> SignalWorkflow:
    return SignalWorkflow("w", None, "go", (), request_id, reply_to=transport.client_id)


async def test_a_failed_reply_reader_fails_every_wait_and_every_later_request(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answer_on_send(transport, monkeypatch, answer_at=0)
    waiting = asyncio.create_task(transport.request(_start(transport, await_result=True), None))
    await asyncio.sleep(0.05)

    def broken(*_args: object) -> list[object]:
        raise KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True))

    monkeypatch.setattr(kafka_transport, "consume_available", broken)
    reader = threading.Thread(target=transport._read_replies)
    reader.start()
    with pytest.raises(RPCError, match="reply reader failed"):
        await asyncio.wait_for(waiting, 10)
    with pytest.raises(RPCError, match="reply reader failed"):
        await transport.request(_signal(transport), 1)
    reader.join(5)


async def test_a_reader_failing_while_a_request_registers_fails_that_request_too(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader thread fails the waiting requests itself now (no longer on the loop):
    one that had passed the "broken?" check but was not registered yet was in neither
    group, and waited for an answer no reader would bring (forever, without a timeout)."""
    _answer_on_send(transport, monkeypatch, answer_at=0)
    real = asyncio.get_running_loop
    armed = [True]

    def get_running_loop() -> asyncio.AbstractEventLoop:
        loop = real()
        if armed and threading.current_thread() is threading.main_thread():
            armed.clear()  # the request made its future: the reader fails just then
            broken = RPCError("the client's reply reader failed: boom")
            failing = threading.Thread(target=transport._fail_answers, args=(broken,))
            failing.start()
            failing.join(5)
        return loop

    monkeypatch.setattr(asyncio, "get_running_loop", get_running_loop)
    with pytest.raises(RPCError, match="reply reader failed"):
        await asyncio.wait_for(transport.request(_signal(transport), None), 2)


async def test_a_send_racing_a_close_from_another_loop_is_failed_not_left_waiting(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport serves loops of several threads. A send past its "closed?" check when
    another loop's close flushed and failed the sends it knew of produced afterwards and
    registered too late: no thread polled for its delivery any more, and it waited
    forever. It is refused (or, registered, failed by the close) instead."""
    real = serde.encode_inbox
    armed = [True]

    def encode_inbox(message: InboxMessage) -> bytes:
        if armed:
            armed.clear()  # the send is past its check: another loop closes just now
            closing = threading.Thread(target=asyncio.run, args=(transport.close(),))
            closing.start()
            closing.join(30)
        return real(message)

    monkeypatch.setattr(serde, "encode_inbox", encode_inbox)
    with pytest.raises(ClientClosedError):
        await asyncio.wait_for(transport.send(_signal(transport)), 5)


async def test_callers_sharing_a_request_id_each_hear_their_answer(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answer_on_send(transport, monkeypatch, answer_at=0)
    twice = [
        asyncio.create_task(transport.request(_start(transport, await_result=True), None))
        for _ in range(2)
    ]
    other = asyncio.create_task(
        transport.request(GetWorkflowResult("other", None, "r1", transport.client_id), None)
    )
    await asyncio.sleep(0.05)
    transport._deliver([Reply(transport.client_id, "r1", "w", OUTCOME)])
    assert await asyncio.wait_for(asyncio.gather(*twice), 5) == [OUTCOME, OUTCOME]
    assert not other.done()  # the same request id, another workflow: not its answer
    other.cancel()


async def test_a_second_close_returns_once_the_first_has_closed(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It returned at once while the first still flushed: a caller that then let its loop
    end (``asyncio.run`` returning) cut the first close short, its requests left waiting."""
    waiting = asyncio.create_task(transport.request(_signal(transport), None))
    await asyncio.sleep(0.05)
    flushing = threading.Event()

    def slow_flush(_timeout: float) -> int:
        flushing.set()
        time.sleep(0.3)
        return 0

    monkeypatch.setattr(transport, "_producer", _SlowFlush(slow_flush))
    first = asyncio.create_task(transport.close())
    await asyncio.to_thread(flushing.wait, 5)

    await transport.close()

    assert first.done()
    with pytest.raises(ClientClosedError):
        await waiting


class _SlowFlush:
    def __init__(self, flush: Any) -> None:
        self.flush = flush
