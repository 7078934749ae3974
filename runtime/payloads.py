"""The two value types every event and message carries: user data and failures.

They are plain data so that the pure engine, the Avro serde and the in-memory test
environment share one vocabulary; conversion of Python values to payloads lives in
`runtime.converter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Payload:
    """One user value after conversion and codecs: opaque bytes plus how to read them.

    `encoding` names the converter (``json/plain``) and, once codecs have run, the codec
    chain (``binary/zlib``); Avro stores it as the record ``chronik.Payload``.
    """

    encoding: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure that crosses a process boundary: an activity's exception, a workflow's.

    Python exceptions cannot travel through Kafka; this is what travels instead, and
    `runtime.errors` turns it back into the typed exception on the other side.
    `kind` is one of ``application``, ``timeout``, ``cancelled``, ``terminated``,
    ``activity``, ``child_workflow``, ``nondeterminism``, ``server``.
    """

    message: str
    kind: str = "application"
    type: str = ""
    stack_trace: str = ""
    non_retryable: bool = False
    #: For ``timeout``: ``start_to_close``, ``schedule_to_start``, ``schedule_to_close``,
    #: ``heartbeat`` or ``workflow_execution``.
    timeout_type: str = ""
    details: tuple[Payload, ...] = ()
    cause: Failure | None = field(default=None)
