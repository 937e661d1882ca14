"""Idempotent consumers for any at-least-once broker (Redis Streams, Kafka,
RabbitMQ, SQS, webhooks, jobs): the message's work and its key commit in one
transaction, and the broker is acknowledged only after that commit.

    from pg_idempotency.consumer import process
    ran = process(conn, "consumer:payments", message_id, apply_payment, ack=lambda: broker.ack(msg))

A crash between the commit and the acknowledgement makes the broker deliver
the message again; once() then answers "already processed" (the handler does
not run twice) and the message is acknowledged. A crash before the commit
rolls the work and the key back: the redelivery processes it afresh.
RedisStreams below is that loop for a Redis Streams consumer group.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import psycopg

from . import client
from ._types import Duration
from .errors import IdempotencyError

Handler = Callable[[psycopg.Connection], Any]


def process(conn: psycopg.Connection, scope: str, key: str, handler: Handler, *,
            ack: Optional[Callable[[], Any]] = None, ttl: Duration = None, wait: Duration = 0.5) -> bool:
    """Runs handler(conn) once per key (idempotency.once()) and then acks.
    Returns whether the handler ran (False: a redelivery of a processed
    message, acknowledged again). Raises IdempotencyError without acking
    when another delivery of the key still holds it past wait (55P03: it may
    yet roll back; let the broker redeliver) or the database is lost."""
    ran = client.once(conn, scope, key, handler, ttl=ttl, wait=wait)
    if ack is not None:
        ack()
    return ran


class RedisStreams:
    """One consumer of a Redis Streams consumer group (redis-py client):
    new entries with XREADGROUP, entries left pending by a consumer that died
    with XAUTOCLAIM after min_idle_ms, each processed with process() and
    XACKed after its commit. key_of(entry_id, fields) names the message's
    idempotency key (default: the "id" field, else the entry id)."""

    def __init__(self, redis: Any, conn: psycopg.Connection, *, stream: str, group: str, name: str,
                 scope: str, handler: Callable[[psycopg.Connection, dict], Any],
                 key_of: Optional[Callable[[str, dict], str]] = None, min_idle_ms: int = 2000,
                 wait: Duration = 0.5, ttl: Duration = None,
                 before_ack: Optional[Callable[[str, bool], Any]] = None) -> None:
        self.redis, self.conn = redis, conn
        self.stream, self.group, self.name, self.scope = stream, group, name, scope
        self.handler = handler
        self.key_of = key_of or (lambda entry_id, fields: fields.get("id", entry_id))
        self.min_idle_ms, self.wait, self.ttl = min_idle_ms, wait, ttl
        self.before_ack = before_ack  # test hook: runs after the commit, before XACK
        self.applied = self.redelivered = self.busy = 0

    def ensure_group(self) -> None:
        import redis as redis_lib

        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis_lib.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _fields(self, raw: dict) -> dict:
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def handle(self, entry_id: Any, raw_fields: dict) -> Optional[bool]:
        """One entry: True applied, False already processed (acked again),
        None left pending (another delivery still holds the key)."""
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        fields = self._fields(raw_fields)

        def ack() -> None:
            if self.before_ack is not None:
                self.before_ack(entry, ran_box[0])
            self.redis.xack(self.stream, self.group, entry)

        ran_box = [False]

        def work(conn: psycopg.Connection) -> None:
            ran_box[0] = True
            self.handler(conn, fields)

        try:
            ran = process(self.conn, self.scope, self.key_of(entry, fields), work, ack=ack, ttl=self.ttl,
                          wait=self.wait)
        except IdempotencyError as e:
            if e.sqlstate == "55P03":
                self.busy += 1
                return None
            raise
        if ran:
            self.applied += 1
        else:
            self.redelivered += 1
        return ran

    def _entries(self, block_ms: int) -> Iterable[tuple[Any, dict]]:
        claimed = self.redis.xautoclaim(self.stream, self.group, self.name, self.min_idle_ms, "0-0", count=100)
        for entry_id, fields in claimed[1] if claimed else []:
            if fields:
                yield entry_id, fields
        got = self.redis.xreadgroup(self.group, self.name, {self.stream: ">"}, count=100, block=block_ms)
        for _stream, entries in got or []:
            yield from entries

    def run_once(self, block_ms: int = 200) -> int:
        """Processes what is available now; returns how many entries it saw."""
        n = 0
        for entry_id, fields in self._entries(block_ms):
            self.handle(entry_id, fields)
            n += 1
        return n

    def run(self, stop: Callable[[], bool], block_ms: int = 200) -> None:
        while not stop():
            self.run_once(block_ms)
