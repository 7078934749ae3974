"""The client: start workflows and talk to them, over a pluggable transport.

The client only builds inbox messages and reads replies; how they travel is the
`Transport`'s job (Kafka in production, in memory in `runtime.testing`). So both
environments expose the very same `Client`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from runtime.async_activity import AsyncActivityHandle
from runtime.converter import DataConverter
from runtime.definitions import (
    QUERY_ATTR,
    SIGNAL_ATTR,
    UPDATE_ATTR,
    TypeHints,
    handler_name,
    workflow_definition,
    workflow_name,
)
from runtime.errors import (
    RPCError,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    exception_from_failure,
)
from runtime.events import HistoryEvent
from runtime.messages import (
    CancelWorkflow,
    DescribeWorkflow,
    FetchHistory,
    GetWorkflowResult,
    HistoryPage,
    IdReusePolicy,
    InboxMessage,
    PendingActivity,
    PendingChild,
    PendingTimer,
    QueryAnswer,
    QueryWorkflow,
    ReplyBody,
    RequestAccepted,
    RequestFailed,
    SignalWorkflow,
    StartAccepted,
    StartSignal,
    StartWorkflow,
    StatusRecord,
    TerminateWorkflow,
    UpdateOutcome,
    UpdateWorkflow,
    WorkflowDescription,
    WorkflowOutcome,
    WorkflowStatus,
)
from runtime.task_token import TaskToken


@runtime_checkable
class Transport(Protocol):
    """Carries inbox messages and resolves replies addressed to `client_id`."""

    client_id: str

    async def send(self, message: InboxMessage) -> None:
        """Fire and forget."""

    async def request(self, message: InboxMessage, timeout: float | None) -> ReplyBody:
        """Send a message carrying reply_to=client_id and a request_id; await its reply.

        Raises `RPCTimeoutError` when no reply arrives within `timeout` seconds.
        """
        ...

    async def close(self) -> None: ...

    async def workflow_statuses(self) -> list[StatusRecord]:
        """The latest status of every workflow the namespace retains, in no order."""
        ...


def _ms(value: timedelta | None) -> int:
    return round(value.total_seconds() * 1000) if value else 0


def _request_id() -> str:
    return str(uuid.uuid4())


class Client:
    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str = "chronik",
        data_converter: DataConverter | None = None,
        rpc_timeout: float = 30.0,
    ) -> None:
        self.transport = transport
        self.namespace = namespace
        self.data_converter = data_converter or DataConverter()
        self.rpc_timeout = rpc_timeout

    @classmethod
    async def connect(
        cls,
        bootstrap_servers: str,
        *,
        namespace: str = "chronik",
        data_converter: DataConverter | None = None,
        rpc_timeout: float = 30.0,
        **librdkafka_config: Any,
    ) -> Client:
        """Connect over Kafka; ``librdkafka_config`` is passed to every Kafka client, the
        client's own settings (``rpc_timeout``) are not."""
        from runtime.kafka_transport import KafkaTransport  # noqa: PLC0415 - Kafka is optional here

        transport = await KafkaTransport.connect(
            bootstrap_servers, namespace=namespace, **librdkafka_config
        )
        return cls(
            transport, namespace=namespace, data_converter=data_converter, rpc_timeout=rpc_timeout
        )

    async def close(self) -> None:
        await self.transport.close()

    async def start_workflow(
        self,
        workflow: Any,
        *args: Any,
        id: str,
        task_queue: str,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
        execution_timeout: timedelta | None = None,
        request_id: str | None = None,
        result_type: Any = None,
        start_signal: Any = None,
        start_signal_args: Sequence[Any] = (),
    ) -> WorkflowHandle:
        """Start a run; a repeated `request_id` returns the run it started (idempotent).

        With ``start_signal`` (a signal method or its name) this is signal-with-start: an
        open run of the id takes the signal and no run starts; else a new run starts and
        gets the signal (``start_signal_args``) right after its start. The workflow's
        owner decides in one step, so concurrent senders never start two runs.
        """
        message = self._start_message(
            workflow,
            args,
            id=id,
            task_queue=task_queue,
            id_reuse_policy=id_reuse_policy,
            execution_timeout=execution_timeout,
            request_id=request_id,
            start_signal=start_signal,
            start_signal_args=start_signal_args,
        )
        body = await self._request(message)
        if not isinstance(body, StartAccepted):
            raise RPCError(f"unexpected reply to a start: {body!r}")
        # Like Temporal's: the handle follows the workflow id (signals, queries and cancels
        # reach the run after a continue-as-new); its result is that of the chain the start
        # began (`first_execution_run_id`).
        return WorkflowHandle(
            self,
            id,
            first_run_id=body.run_id,
            result_type=_result_type(workflow, result_type),
        )

    async def execute_workflow(self, workflow: Any, *args: Any, **kwargs: Any) -> Any:
        """Start a run and wait for its result; takes the arguments of `start_workflow`.

        One inbox message (a start with ``await_result``) and one reply (the outcome, or the
        start's refusal): the owner answers when the run closes, following continue-as-new.
        There is no acceptance to wait for, so there is no timeout either; while waiting the
        transport re-sends the same start, which the owner treats as a re-ask.
        """
        result_type = _result_type(workflow, kwargs.pop("result_type", None))
        message = self._start_message(workflow, args, await_result=True, **kwargs)
        body = await self._request(message, None)
        return _outcome_value(body, self.data_converter, result_type)

    def _start_message(
        self,
        workflow: Any,
        args: Sequence[Any],
        *,
        id: str,
        task_queue: str,
        id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE,
        execution_timeout: timedelta | None = None,
        request_id: str | None = None,
        await_result: bool = False,
        start_signal: Any = None,
        start_signal_args: Sequence[Any] = (),
    ) -> StartWorkflow:
        """The one place start arguments become a `StartWorkflow` addressed back to us."""
        signal = None
        if start_signal is not None:
            name = handler_name(start_signal, SIGNAL_ATTR)
            signal = StartSignal(name, self.data_converter.encode(start_signal_args))
        elif start_signal_args:
            raise TypeError("start_signal_args without a start_signal")
        return StartWorkflow(
            workflow_id=id,
            workflow_type=workflow_name(workflow),
            task_queue=task_queue,
            input=self.data_converter.encode(args),
            request_id=request_id or _request_id(),
            id_reuse_policy=id_reuse_policy,
            reply_to=self.transport.client_id,
            execution_timeout_ms=_ms(execution_timeout),
            await_result=await_result,
            start_signal=signal,
        )

    def get_workflow_handle(
        self, workflow_id: str, *, run_id: str | None = None, result_type: Any = None
    ) -> WorkflowHandle:
        return WorkflowHandle(self, workflow_id, run_id=run_id, result_type=result_type)

    def get_async_activity_handle(self, task_token: bytes | str) -> AsyncActivityHandle:
        """A handle to complete, fail or heartbeat the attempt ``task_token`` names (an
        activity's `activity.info().task_token`, after `activity.raise_complete_async`);
        `InvalidTaskTokenError` for bytes that are no task token."""
        return AsyncActivityHandle(self, TaskToken.decode(task_token))

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | Iterable[WorkflowStatus] | None = None,
        workflow_type: str | None = None,
        task_queue: str | None = None,
        task_failing: bool | None = None,
    ) -> AsyncIterator[StatusRecord]:
        """The namespace's workflows, newest start first, as their status records say.

        Running ones and closed ones still in retention, each by its latest run; narrowed
        to the given status(es), workflow type and task queue, and with ``task_failing``
        to the open runs whose workflow task fails (``True``: the ones waiting for fixed
        code) or does not. Over Kafka this reads the whole compacted status topic
        (`runtime.visibility`), asking no worker.
        """
        # A status's text is a str, and so an iterable of its characters: one status too.
        wanted = {status} if isinstance(status, str) else status
        wanted = None if wanted is None else frozenset(WorkflowStatus(s) for s in wanted)
        records = await self.transport.workflow_statuses()
        for record in sorted(records, key=lambda r: (-r.start_time_ms, r.workflow_id)):
            if (
                (wanted is None or record.status in wanted)
                and (workflow_type is None or record.workflow_type == workflow_type)
                and (task_queue is None or record.task_queue == task_queue)
                and (task_failing is None or (record.task_failure is not None) == task_failing)
            ):
                yield record

    async def _request(self, message: InboxMessage, timeout: float | None = -1.0) -> ReplyBody:
        t = self.rpc_timeout if timeout == -1.0 else timeout
        body = await self.transport.request(message, t)
        if isinstance(body, RequestFailed):
            raise exception_from_failure(body.failure, self.data_converter.decode)
        return body


@dataclass(frozen=True, slots=True)
class WorkflowExecutionDescription(StatusRecord):
    """What `WorkflowHandle.describe` returns: the run's status record (current, where a
    listed one is as of its last write) and what the run waits on — the activities with
    their attempts and last failure, the timers, the children. All empty once it closed.

    A `StatusRecord` itself, so code that reads ``describe().status`` reads it as before.
    """

    pending_activities: tuple[PendingActivity, ...] = ()
    pending_timers: tuple[PendingTimer, ...] = ()
    pending_children: tuple[PendingChild, ...] = ()

    def pending_activity(self, seq: int) -> PendingActivity | None:
        """The open activity of sequence number ``seq``; None: no such one is open."""
        return next((p for p in self.pending_activities if p.seq == seq), None)


class WorkflowHandle:
    """A workflow id (and optionally one run of it) to talk to."""

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        *,
        run_id: str | None = None,
        first_run_id: str | None = None,
        result_type: Any = None,
    ) -> None:
        self.client = client
        self.id = workflow_id
        self.run_id = run_id
        self.first_execution_run_id = first_run_id
        self.result_type = result_type

    @property
    def _transport(self) -> Transport:
        return self.client.transport

    @property
    def _conv(self) -> DataConverter:
        return self.client.data_converter

    async def result(self, *, follow_runs: bool = True, timeout: float | None = None) -> Any:
        """Wait for the run to close; raise `WorkflowFailureError` unless it completed."""
        message = GetWorkflowResult(
            self.id,
            self.run_id or self.first_execution_run_id,
            _request_id(),
            self._transport.client_id,
            follow_runs,
        )
        body = await self.client._request(message, timeout)
        return _outcome_value(body, self._conv, self.result_type)

    async def signal(self, signal: Any, *args: Any, request_id: str | None = None) -> None:
        """Deliver a signal; a retry with the same ``request_id`` delivers it once."""
        message = SignalWorkflow(
            self.id,
            self.run_id,
            handler_name(signal, SIGNAL_ATTR),
            self._conv.encode(args),
            request_id or _request_id(),
            self._transport.client_id,
        )
        await self._accepted(message)

    async def query(self, query: Any, *args: Any, result_type: Any = None) -> Any:
        message = QueryWorkflow(
            self.id,
            self.run_id,
            handler_name(query, QUERY_ATTR),
            self._conv.encode(args),
            _request_id(),
            self._transport.client_id,
        )
        body = await self.client._request(message)
        if not isinstance(body, QueryAnswer):
            raise RPCError(f"unexpected reply to a query: {body!r}")
        if body.failure is not None:
            raise WorkflowQueryFailedError(body.failure.message)
        return self._conv.decode_one(body.result, result_type or _return_hint(query))

    async def execute_update(
        self, update: Any, *args: Any, id: str | None = None, result_type: Any = None
    ) -> Any:
        request_id = _request_id()
        message = UpdateWorkflow(
            self.id,
            self.run_id,
            id or request_id,
            handler_name(update, UPDATE_ATTR),
            self._conv.encode(args),
            request_id,
            self._transport.client_id,
        )
        body = await self.client._request(message, None)  # as long as the handler runs
        if not isinstance(body, UpdateOutcome):
            raise RPCError(f"unexpected reply to an update: {body!r}")
        if body.failure is not None:
            error = WorkflowUpdateFailedError(body.failure.message)
            error.__cause__ = exception_from_failure(body.failure, self._conv.decode)
            raise error
        return self._conv.decode_one(body.result, result_type or _return_hint(update))

    async def cancel(self, reason: str = "", *, request_id: str | None = None) -> None:
        """Ask the run to cancel; a retry with the same ``request_id`` is answered as the
        first was, even after the run closed."""
        message = CancelWorkflow(
            self.id, self.run_id, reason, request_id or _request_id(), self._transport.client_id
        )
        await self._accepted(message)

    async def terminate(self, reason: str = "", *, request_id: str | None = None) -> None:
        """End the run at once; a retry with the same ``request_id`` is answered as the
        first was, even after the run closed."""
        message = TerminateWorkflow(
            self.id, self.run_id, reason, request_id or _request_id(), self._transport.client_id
        )
        await self._accepted(message)

    async def describe(self) -> WorkflowExecutionDescription:
        """The run's status as its owner has it now, and what it waits on."""
        message = DescribeWorkflow(self.id, self.run_id, _request_id(), self._transport.client_id)
        body = await self.client._request(message)
        if not isinstance(body, WorkflowDescription):
            raise RPCError(f"unexpected reply to describe: {body!r}")
        return WorkflowExecutionDescription(
            **{f.name: getattr(body.status, f.name) for f in dataclasses.fields(body.status)},
            pending_activities=body.pending_activities,
            pending_timers=body.pending_timers,
            pending_children=body.pending_children,
        )

    async def fetch_history(self) -> Sequence[HistoryEvent]:
        """Every event of this workflow id (of `run_id` only, when the handle has one)."""
        return [event async for event in self.history_events()]

    async def history_events(self) -> AsyncIterator[HistoryEvent]:
        """The events of `fetch_history`, page by page as they arrive.

        A page is what fits in one reply record (about 1 MB); a history larger than that
        takes one request per page, each asking for the events after the last one seen.
        """
        after = 0
        while True:
            message = FetchHistory(
                self.id, self.run_id, _request_id(), self._transport.client_id, after
            )
            body = await self.client._request(message)
            if not isinstance(body, HistoryPage):
                raise RPCError(f"unexpected reply to fetch_history: {body!r}")
            for event in body.events:
                yield event
            if not body.more or not body.events:
                return
            after = body.events[-1].event_id

    async def _accepted(self, message: InboxMessage) -> None:
        body = await self.client._request(message)
        if not isinstance(body, RequestAccepted):
            raise RPCError(f"unexpected reply: {body!r}")


def _outcome_value(body: ReplyBody, converter: DataConverter, result_type: Any) -> Any:
    """The value of a closed run's outcome; raise `WorkflowFailureError` unless it completed."""
    if not isinstance(body, WorkflowOutcome):
        raise RPCError(f"unexpected reply to a result request: {body!r}")
    if body.status is WorkflowStatus.COMPLETED:
        return converter.decode_one(body.result, result_type)
    if body.failure is None:
        raise WorkflowFailureError(cause=RPCError(f"workflow run ended as {body.status}"))
    raise WorkflowFailureError(cause=exception_from_failure(body.failure, converter.decode))


def _result_type(workflow: Any, explicit: Any) -> Any:
    """The type to decode a result into: given, else the workflow's return annotation."""
    if explicit is not None:
        return explicit
    defn = None if isinstance(workflow, str) else workflow_definition(workflow)
    return defn.return_type if defn is not None else None


def _return_hint(handler: Any) -> Any:
    if isinstance(handler, str):
        return None
    return TypeHints(handler, skip_self=True).returns
