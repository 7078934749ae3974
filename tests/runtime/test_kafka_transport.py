"""The Kafka transport re-asks while waiting for a run to close, and only then.

No broker: `send` is replaced, so what is checked is the transport's own waiting logic
(nothing is produced, and the reply is handed to it the way its reader thread would).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.converter import DataConverter
from runtime.errors import RPCTimeoutError
from runtime.kafka_transport import KafkaTransport
from runtime.messages import (
    GetWorkflowResult,
    InboxMessage,
    Reply,
    StartWorkflow,
    WorkflowOutcome,
    WorkflowStatus,
)

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


@pytest.mark.parametrize("kind", ["awaiting start", "result request"])
async def test_a_request_for_an_outcome_is_re_sent_until_answered(
    transport: KafkaTransport, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    sent = _answer_on_send(transport, monkeypatch, answer_at=3)
    message: InboxMessage = (
        _start(transport, await_result=True)
        if kind == "awaiting start"
        else GetWorkflowResult("w", None, "r1", transport.client_id)
    )
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
