"""`WorkflowEnvironment`: run workflows and activities in memory, with time skipping.

The environment drives the same engine as production (`WorkflowInstance.handle`) through
an in-memory transport. While a client waits for a result and nothing else can move,
virtual time jumps to the next timer, so a 30-day sleep takes no real time.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from runtime.client import Client
from runtime.converter import DataConverter
from runtime.epoch import datetime_of
from runtime.errors import RPCTimeoutError
from runtime.events import HistoryEvent
from runtime.messages import InboxMessage, Reply, ReplyBody, StatusRecord, awaits_outcome
from runtime.testing.service import InMemoryService

__all__ = ["InMemoryTransport", "WorkflowEnvironment"]

_client_ids = itertools.count(1)


class InMemoryTransport:
    """A `Transport` whose other side is an `InMemoryService`."""

    def __init__(self, service: InMemoryService) -> None:
        self.service = service
        self.client_id = f"memory-client-{next(_client_ids)}"
        self._waiting: dict[str, asyncio.Future[ReplyBody]] = {}

    def deliver(self, reply: Reply) -> None:
        fut = self._waiting.pop(reply.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(reply.body)

    async def send(self, message: InboxMessage) -> None:
        self.service.post(message)

    async def workflow_statuses(self) -> list[StatusRecord]:
        return list(self.service.statuses.values())

    async def request(self, message: InboxMessage, timeout: float | None) -> ReplyBody:
        request_id = str(getattr(message, "request_id", ""))
        fut: asyncio.Future[ReplyBody] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        # Someone waits for a run to close: time may skip to the next timer meanwhile.
        is_result = awaits_outcome(message)
        if is_result:
            self.service.result_requests += 1
        try:
            self.service.post(message)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise RPCTimeoutError(f"no reply to {type(message).__name__} in {timeout}s") from None
        finally:
            self._waiting.pop(request_id, None)
            if is_result:
                self.service.result_requests -= 1
                self.service.wake()

    async def close(self) -> None:
        for fut in self._waiting.values():
            fut.cancel()


class WorkflowEnvironment:
    def __init__(self, service: InMemoryService, client: Client) -> None:
        self.service = service
        self.client = client

    @classmethod
    @asynccontextmanager
    async def start_time_skipping(
        cls,
        *,
        data_converter: DataConverter | None = None,
        restore_each_message: bool = False,
        start_time: datetime | None = None,
    ) -> AsyncIterator[WorkflowEnvironment]:
        """An environment; `restore_each_message` replays every idle workflow from its
        history before each message (slow, but proves histories replay)."""
        service = InMemoryService(restore_each_message=restore_each_message)
        if start_time is not None:
            service.now_ms = int(start_time.timestamp() * 1000)
        transport = InMemoryTransport(service)
        service.on_reply = transport.deliver
        service.start()
        env = cls(service, Client(transport, namespace="memory", data_converter=data_converter))
        try:
            yield env
        finally:
            await transport.close()
            await service.stop()
        if service.errors:
            raise RuntimeError("the in-memory service failed") from service.errors[0]

    def now(self) -> datetime:
        return datetime_of(self.service.now_ms)

    async def sleep(self, duration: timedelta | float) -> None:
        """Advance virtual time, firing every timer due on the way."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        await self.service.skip(round(seconds * 1000))

    def histories(self) -> dict[str, list[HistoryEvent]]:
        """Every workflow id's full history, as the environment recorded it (an id that
        only ever got refused requests has none, and is not listed)."""
        return {wid: list(events) for wid, events in self.service.histories.items() if events}
