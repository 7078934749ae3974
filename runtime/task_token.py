"""Task tokens: the name of one activity attempt, to complete it away from its worker.

An activity that hands its work to another system (a payment provider that calls back, a
person who approves) calls `activity.raise_complete_async()`; whoever finishes the work
later completes, fails or heartbeats the attempt with `Client.get_async_activity_handle`
and the token. The token is JSON (UTF-8) of the attempt's workflow id, run id, activity
sequence number and attempt: a system written in another language can keep it as text
and produce the report itself (docs/guide.md, "Completing an activity from outside").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runtime.errors import ChronikError


class InvalidTaskTokenError(ChronikError, ValueError):
    """The bytes are not a task token Chronik wrote."""


@dataclass(frozen=True, slots=True)
class TaskToken:
    workflow_id: str
    run_id: str
    seq: int
    attempt: int

    def encode(self) -> bytes:
        fields = {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "seq": self.seq,
            "attempt": self.attempt,
        }
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, token: bytes | str) -> TaskToken:
        try:
            fields: Any = json.loads(token)
        except (ValueError, TypeError) as error:  # UnicodeDecodeError is a ValueError
            raise InvalidTaskTokenError(f"not a task token (not JSON): {token!r:.80}") from error
        if not isinstance(fields, dict):
            raise InvalidTaskTokenError(f"not a task token (not an object): {token!r:.80}")
        try:
            parsed = cls(fields["workflow_id"], fields["run_id"], fields["seq"], fields["attempt"])
        except KeyError as missing:
            raise InvalidTaskTokenError(f"a task token without {missing}: {token!r:.80}") from None
        shapes = ((parsed.workflow_id, str), (parsed.run_id, str), (parsed.seq, int),
                  (parsed.attempt, int))  # fmt: skip
        if any(type(value) is not shape for value, shape in shapes):
            raise InvalidTaskTokenError(f"a task token with fields of the wrong type: {fields}")
        return parsed
