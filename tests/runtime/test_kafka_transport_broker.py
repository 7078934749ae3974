"""The Kafka transport against the real broker: replies and delivery reports reach the
event loop that waits for them, whichever loop that is.

No workflow worker runs: the test writes the replies a worker would, to ``<ns>.replies``
keyed by the client id.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from confluent_kafka import Producer

from runtime.client import Client
from runtime.errors import RPCTimeoutError
from runtime.kafka_transport import KafkaTransport
from runtime.messages import (
    DescribeWorkflow,
    Reply,
    RequestAccepted,
    SignalWorkflow,
)
from topics import serde
from topics.admin import TopicAdmin
from topics.catalogue import Catalogue, TopicNames
from topics.partitioner import producer_config

pytestmark = pytest.mark.kafka


@pytest.fixture
def topics(kafka_bootstrap: str, namespace: str) -> str:
    TopicAdmin({"bootstrap.servers": kafka_bootstrap}).create(Catalogue(namespace, 2))
    return namespace


def _answer(bootstrap: str, namespace: str, reply: Reply) -> None:
    """Write ``reply`` to the replies topic the way a workflow worker does."""
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    producer.produce(
        TopicNames(namespace).replies,
        key=serde.client_key(reply.client_id),
        value=serde.encode_reply(reply),
    )
    assert producer.flush(10) == 0


async def _signal_then_describe(transport: KafkaTransport, bootstrap: str) -> None:
    """A send (its delivery report) and a request (its reply), on the running loop."""
    signal = SignalWorkflow("w", None, "go", (), "s-1", transport.client_id)
    await asyncio.wait_for(transport.send(signal), 15)
    describe = DescribeWorkflow("w", None, "d-1", transport.client_id)
    asking = asyncio.ensure_future(transport.request(describe, 15))
    await asyncio.sleep(0.2)  # the request is waiting
    reply = Reply(transport.client_id, "d-1", "w", RequestAccepted())
    await asyncio.to_thread(_answer, bootstrap, transport.namespace, reply)
    assert await asking == RequestAccepted()


def test_a_transport_connected_in_one_event_loop_serves_another(
    kafka_bootstrap: str, topics: str
) -> None:
    """``asyncio.run(connect())`` then ``asyncio.run(use())``: the threads handed every
    delivery report and reply to the first loop, closed by then, so each send waited
    forever (its report's hand-over raised in the poller thread, which died)."""
    transport = asyncio.run(KafkaTransport.connect(kafka_bootstrap, namespace=topics))
    try:
        asyncio.run(_signal_then_describe(transport, kafka_bootstrap))
    finally:
        asyncio.run(transport.close())


def test_one_transport_serves_loops_of_two_threads_at_once(
    kafka_bootstrap: str, topics: str
) -> None:
    transport = asyncio.run(KafkaTransport.connect(kafka_bootstrap, namespace=topics))
    errors: list[BaseException] = []

    def in_a_thread(name: str) -> None:
        async def use() -> None:
            signal = SignalWorkflow(name, None, "go", (), f"{name}-s", transport.client_id)
            await asyncio.wait_for(transport.send(signal), 15)
            describe = DescribeWorkflow(name, None, f"{name}-d", transport.client_id)
            asking = asyncio.ensure_future(transport.request(describe, 15))
            await asyncio.sleep(0.2)
            reply = Reply(transport.client_id, f"{name}-d", name, RequestAccepted())
            await asyncio.to_thread(_answer, kafka_bootstrap, topics, reply)
            assert await asking == RequestAccepted()

        try:
            asyncio.run(use())
        except BaseException as error:  # reported by the test's thread
            errors.append(error)

    threads = [threading.Thread(target=in_a_thread, args=(f"w{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    asyncio.run(transport.close())
    assert errors == []


async def test_more_concurrent_sends_than_the_producer_queue_holds_all_go_out(
    kafka_bootstrap: str, topics: str
) -> None:
    """librdkafka refuses a record (`BufferError`) while its queue is full; a burst of
    requests larger than the queue raised that to the callers beyond it."""
    transport = await KafkaTransport.connect(
        kafka_bootstrap, namespace=topics, **{"queue.buffering.max.messages": 2}
    )
    try:
        signals = [
            SignalWorkflow(f"w{n}", None, "go", (), f"s-{n}", transport.client_id)
            for n in range(20)
        ]
        await asyncio.wait_for(asyncio.gather(*(transport.send(s) for s in signals)), 30)
    finally:
        await transport.close()


async def test_connect_takes_the_clients_rpc_timeout(kafka_bootstrap: str, topics: str) -> None:
    """`Client(...)` takes ``rpc_timeout``; `Client.connect` handed it to librdkafka, which
    refused it ("No such configuration property")."""
    client = await Client.connect(kafka_bootstrap, namespace=topics, rpc_timeout=0.5)
    try:
        assert client.rpc_timeout == 0.5
        with pytest.raises(RPCTimeoutError):  # no workflow worker runs: in 0.5 s, not 30
            await asyncio.wait_for(client.get_workflow_handle("w").describe(), 10)
    finally:
        await client.close()


async def test_a_result_wait_that_times_out_says_the_workflow_did_not_close(
    kafka_bootstrap: str, topics: str
) -> None:
    """A running workflow is the usual reason; the message blamed a missing worker."""
    client = await Client.connect(kafka_bootstrap, namespace=topics)
    try:
        with pytest.raises(RPCTimeoutError, match=r"did not close within 0\.5s"):
            await client.get_workflow_handle("still-running").result(timeout=0.5)
    finally:
        await client.close()
