"""The values pg_idempotency's calls take and return (plain dataclasses)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping, Optional, Sequence, Union

# A stored header's value: one string, or the list of its values for a header
# sent more than once (as the Node and C++ middleware store it).
HeaderValue = Union[str, Sequence[str]]
Duration = Union[timedelta, int, float, None]  # int/float: seconds


class Outcome(str, enum.Enum):
    """claim()'s answer (the SQL enum labels)."""

    CLAIMED = "claimed"
    REPLAY = "replay"
    IN_PROGRESS = "in_progress"
    MISMATCH = "mismatch"


class KeyState(str, enum.Enum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass
class Response:
    """A stored (or new) result: any status code, raw body bytes and a flat
    mapping of headers (stored as the jsonb object finish() takes)."""

    status: int
    body: bytes = b""
    headers: Optional[Mapping[str, HeaderValue]] = None

    def __post_init__(self) -> None:
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")
        elif self.body is None:
            self.body = b""
        else:
            self.body = bytes(self.body)


@dataclass
class ClaimResult:
    outcome: Outcome
    token: Optional[int] = None  # set when CLAIMED
    attempt: int = 0  # 1 = fresh claim, > 1 = takeover after a lease ran out
    recovery_point: Optional[str] = None  # kept across takeovers
    response: Optional[Response] = None  # REPLAY: the stored one; execute() CLAIMED: the new one
    expires_at: Optional[datetime] = None
    locked_until: Optional[datetime] = None  # lease end (CLAIMED / IN_PROGRESS when known)
    trace_context: Optional[str] = None  # claim(trace_context=...) only: the traceparent stored with the key

    @property
    def claimed(self) -> bool:
        return self.outcome is Outcome.CLAIMED

    @property
    def replayed(self) -> bool:
        return self.outcome is Outcome.REPLAY


@dataclass
class KeyRecord:
    """One row of idempotency.keys, as lookup() returns it."""

    scope: str
    key: str
    fingerprint: Optional[bytes]
    state: KeyState
    token: int
    attempt: int
    recovery_point: Optional[str]
    locked_until: Optional[datetime]
    created_at: Optional[datetime]
    completed_at: Optional[datetime]
    expires_at: Optional[datetime]
    response: Optional[Response] = field(default=None)
