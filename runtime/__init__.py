"""Chronik's user-facing library: workflows, activities, the client and the replay engine."""

from runtime import activity, workflow
from runtime.client import Client, Transport, WorkflowHandle
from runtime.converter import DataConverter, JsonPayloadConverter, ZlibCodec
from runtime.errors import (
    ActivityError,
    ActivityNotCurrentError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    ChronikError,
    ClientClosedError,
    FailureError,
    NonDeterminismError,
    ReadOnlyContextError,
    RPCError,
    RPCTimeoutError,
    TerminatedError,
    TimeoutError,
    UnknownSignalError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowQueryFailedError,
    WorkflowTypeNotRegisteredError,
    WorkflowUpdateFailedError,
)
from runtime.messages import IdReusePolicy, WorkflowStatus
from runtime.replay import Replayer
from runtime.retry import RetryPolicy

__all__ = [
    "ActivityError",
    "ActivityNotCurrentError",
    "ApplicationError",
    "CancelledError",
    "ChildWorkflowError",
    "ChronikError",
    "Client",
    "ClientClosedError",
    "DataConverter",
    "FailureError",
    "IdReusePolicy",
    "JsonPayloadConverter",
    "NonDeterminismError",
    "RPCError",
    "RPCTimeoutError",
    "ReadOnlyContextError",
    "Replayer",
    "RetryPolicy",
    "TerminatedError",
    "TimeoutError",
    "Transport",
    "UnknownSignalError",
    "WorkflowAlreadyStartedError",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowQueryFailedError",
    "WorkflowStatus",
    "WorkflowTypeNotRegisteredError",
    "WorkflowUpdateFailedError",
    "ZlibCodec",
    "activity",
    "workflow",
]
