"""What the ASGI and Django middleware share: the options of a route, the
request fingerprint, the headers stored and replayed, and the HTTP answers.

They behave as the C++ (<idempotency/httplib.hpp>) and Node middleware do,
and store what they store, so that a key can move between a Python, a C++
and a Node service:
- the fingerprint is idempotency.fingerprint() of one JSON document: for a
  JSON body ["METHOD", "/path", <body>] (canonical JSON: key order and white
  space do not count), for any other body {"method", "path", "body_hex"};
  an empty body is no body whatever its Content-Type;
- the stored headers are one flat JSON object, name -> value; a header the
  route sent more than once is stored as the list of its values, in order
  (Set-Cookie cannot be joined with commas), and replayed as that many lines.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from ._types import ClaimResult, Duration, Outcome

MAX_KEY_BYTES = 255
MAX_BODY = 1024 * 1024

# Not stored by default: per-message, hop-by-hop, or the replay marker. Set-Cookie
# is stored and replayed, as in C++ and Node: a retried login gets its session
# too. Scope keys per user when responses carry cookies.
DEFAULT_SKIPPED = frozenset({
    "content-length", "connection", "keep-alive", "transfer-encoding", "date",
    "idempotent-replayed",
})


@dataclass
class RequestInfo:
    """What a scope callback sees of the request."""

    method: str
    path: str  # percent-decoded, without the query string
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class Reject(Exception):
    """Raised by a route (or a scope callback) to answer without storing
    anything: the work and the claim are rolled back and the key is free
    again (e.g. a validation error the client may fix and retry)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Options:
    """How one route handles Idempotency-Key.

    key_header: the header's name; None: never read a key (a plain
      transaction, what transaction() gives).
    key_required: False lets a request without the header run the route in a
      plain transaction.
    scope: request -> the scope the key belongs to (e.g. the authenticated
      tenant); may raise Reject (e.g. 401). Default "METHOD /path".
    fingerprint: "request" (method + path + body), "json-body"
      (idempotency.fingerprint(body); the body must be JSON) or "none".
    replay_headers: the response headers stored and replayed (any case);
      None: every header the route set but Date and hop-by-hop ones.
    ttl, lease, wait: as claim() takes them (timedelta or seconds); None: the
      server's settings, wait 0.
    """

    key_header: Optional[str] = "Idempotency-Key"
    key_required: bool = True
    scope: Optional[Callable[[RequestInfo], Any]] = None
    fingerprint: str = "request"
    replay_headers: Optional[Sequence[str]] = None
    ttl: Duration = None
    lease: Duration = None
    wait: Duration = None
    max_body: int = MAX_BODY

    def __post_init__(self) -> None:
        if self.fingerprint not in ("request", "json-body", "none"):
            raise ValueError("idempotency: fingerprint must be 'request', 'json-body' or 'none'")


def transaction_options() -> Options:
    return Options(key_header=None, key_required=False, fingerprint="none")


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def error_reply(status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    body = json.dumps({"error": code, "message": message}, ensure_ascii=False).encode("utf-8")
    return Reply(status, [("Content-Type", "application/json"), *headers], body)


def missing_key_reply(options: Options) -> Reply:
    return error_reply(400, "missing_idempotency_key",
                       f"this endpoint requires an {options.key_header} header of 1 to 255 bytes")


def unavailable_reply(why: str) -> Reply:
    return error_reply(503, "database_unavailable",
                       f"the database connection was lost; retry the request: {why}", [("Retry-After", "1")])


def busy_reply(seconds: int) -> Reply:
    """No database connection became free within the bounded wait."""
    return error_reply(503, "database_busy", "no database connection became free in time; retry the request",
                       [("Retry-After", str(seconds))])


def valid_key(key: Optional[str]) -> bool:
    return key is not None and 0 < len(key.encode("utf-8", "surrogateescape")) <= MAX_KEY_BYTES


def is_json(content_type: Optional[str]) -> bool:
    t = (content_type or "").split(";")[0].strip().lower()
    return t == "application/json" or (len(t) > 5 and t.endswith("+json"))


class MalformedJson(Exception):
    pass


def body_text(body: bytes) -> str:
    """The body as JSON text, or MalformedJson (bad UTF-8, NUL)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedJson(f"the request body is not valid UTF-8: {e}") from None
    if "\x00" in text:
        raise MalformedJson("the request body contains a NUL character")
    return text


def fingerprint_document(method: str, path: str, content_type: Optional[str], body: bytes,
                         mode: str) -> Optional[str]:
    """The JSON document whose idempotency.fingerprint() is the request's (the
    same documents the C++ and Node middleware build), or None ("none")."""
    if mode == "none":
        return None
    if mode == "json-body":
        return body_text(body)
    if body and is_json(content_type):
        return f"[{json.dumps(method, ensure_ascii=False)}, {json.dumps(path, ensure_ascii=False)}, {body_text(body)}]"
    return json.dumps({"method": method, "path": path, "body_hex": body.hex()}, ensure_ascii=False)


def stored_headers(headers: Iterable[tuple[str, str]], replay_headers: Optional[Sequence[str]]) -> Optional[dict]:
    """The route's headers worth replaying, as the flat object finish() stores."""
    wanted = None if replay_headers is None else {h.lower() for h in replay_headers}
    out: dict[str, Any] = {}
    names: dict[str, str] = {}  # lower-case -> the name as first sent
    for name, value in headers:
        lower = name.lower()
        if (lower not in wanted) if wanted is not None else (lower in DEFAULT_SKIPPED):
            continue
        if lower not in names:
            names[lower] = name
            out[name] = value
        elif isinstance(out[names[lower]], list):
            out[names[lower]].append(value)
        else:  # sent again: the list of its values, as Node and C++ store it
            out[names[lower]] = [out[names[lower]], value]
    return out or None


def replay_headers_list(stored: Optional[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Stored headers (from any of the three middlewares) as (name, value)
    pairs; a list value is sent as that many headers."""
    out: list[tuple[str, str]] = []
    for name, value in (stored or {}).items():
        if isinstance(value, list):
            out.extend((name, str(v)) for v in value)
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


def retry_after(locked_until: Optional[datetime], now: Optional[datetime] = None) -> int:
    if locked_until is None:
        return 1
    now = now or datetime.now(timezone.utc)
    return max(1, math.ceil((locked_until - now).total_seconds()))


def to_reply(result: ClaimResult) -> Reply:
    """The answer for a claim whose handler did not run: the stored response
    byte for byte plus "Idempotent-Replayed: true", 409 with Retry-After, 422."""
    if result.outcome is Outcome.REPLAY and result.response is not None:
        r = result.response
        return Reply(r.status, [*replay_headers_list(r.headers), ("Idempotent-Replayed", "true")], r.body)
    if result.outcome is Outcome.MISMATCH:
        return error_reply(422, "idempotency_key_reused",
                           "this Idempotency-Key was already used with a different request; use a new key")
    return error_reply(409, "request_in_progress",
                       "a request with this Idempotency-Key is still being processed; retry later",
                       [("Retry-After", str(retry_after(result.locked_until)))])


# SQLSTATEs with which jsonb refuses the fingerprint's document: malformed JSON,
# \u0000, bad UTF-8. Nothing was claimed: 400.
MALFORMED_JSON_STATES = ("22P02", "22P05", "22021")
