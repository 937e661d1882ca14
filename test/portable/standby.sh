#!/usr/bin/env bash
# The portable edition on a hot standby, as the extension behaves there
# (docs/reference.md): a read replica answers replay, mismatch and in_progress from what it
# has replayed; every call that would write fails with 25006 naming the key and
# pointing to the primary, before any lock or statement. A primary with nothing
# preloaded and a streaming standby (pg_basebackup -R), both of their own.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
source "$PORTABLE_ROOT/scripts/lib/common.sh"
need_root
STANDBY_DIR=
cleanup() {
  [ -n "$STANDBY_DIR" ] && [ -f "$STANDBY_DIR/data/postmaster.pid" ] &&
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STANDBY_DIR/data" -m immediate stop >/dev/null 2>&1
  [ -n "$STANDBY_DIR" ] && rm -rf "$STANDBY_DIR"
  stop_cluster
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_cluster "shared_preload_libraries = ''" "wal_level = replica" "max_wal_senders = 4" >/dev/null 2>&1 ||
  { fail "a primary"; exit 1; }
DB=app
fresh_db $DB
install_portable $DB >/dev/null 2>&1 || { fail "installing the edition"; exit 1; }
held=$(sql $DB <<'SQL' | tail -1
BEGIN;
SELECT idempotency.finish('s', 'done', (SELECT token FROM idempotency.claim('s', 'done', '\x01')), 201, 'stored', '{"x":"y"}');
COMMIT;
SELECT token FROM idempotency.claim('s', 'short', lease => '1 ms');
SELECT token FROM idempotency.claim('s', 'held', '\x01', lease => '1 hour');
SQL
)

# The standby: a base backup of the primary, streaming, on a port of its own.
STANDBY_DIR=$(mktemp -d /tmp/portable-standby.XXXXXX); chown postgres:postgres "$STANDBY_DIR"
runuser -u postgres -- "$PG_BIN/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U postgres -D "$STANDBY_DIR/data" -R -X stream >/dev/null 2>&1 ||
  { fail "pg_basebackup"; exit 1; }
sport=$(free_port)
printf "port = %s\nunix_socket_directories = '%s'\nhot_standby = on\n" "$sport" "$STANDBY_DIR" >>"$STANDBY_DIR/data/postgresql.conf"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STANDBY_DIR/data" -l "$STANDBY_DIR/log" -w -t 60 start >/dev/null ||
  { fail "starting the standby"; exit 1; }
on_standby() { PGHOST=$STANDBY_DIR PGPORT=$sport "$PG_BIN/psql" -X -q -At -d $DB "$@" 2>&1; }
for _ in $(seq 1 100); do [ "$(on_standby -c "SELECT count(*) FROM idempotency.keys")" = 3 ] && break; sleep 0.1; done
check "the standby is in recovery and has the keys" "t|3" "$(on_standby -c "SELECT pg_is_in_recovery()")|$(on_standby -c "SELECT count(*) FROM idempotency.keys")"

# Answers that need no write.
check "replay from the standby" "replay|201|stored|{\"x\": \"y\"}|t" \
  "$(on_standby -c "SELECT outcome, response_status, convert_from(response_body, 'UTF8'), response_headers, token IS NULL FROM idempotency.claim('s', 'done', '\x01')")"
check "mismatch from the standby" "mismatch" "$(on_standby -c "SELECT outcome FROM idempotency.claim('s', 'done', '\x02')")"
check "in_progress from the standby" "in_progress|1" "$(on_standby -c "SELECT outcome, attempt FROM idempotency.claim('s', 'held')")"
check "lookup on the standby" "completed" "$(on_standby -c "SELECT (idempotency.lookup('s', 'done')).state")"

# Calls that would write: 25006 naming the key, before any lock or statement.
err() { on_standby -c "\set VERBOSITY verbose" -c "$1" | grep -E '^(ERROR|DETAIL|HINT):' | tr '\n' ' ' | sed 's/ $//'; }
check "a new key on the standby: 25006 naming it" \
  "ERROR:  25006: cannot claim idempotency key \"new\" in scope \"s\" on a hot standby DETAIL:  The key is new, expired or its lease is over: claiming it writes, and this server is in recovery (a read replica). HINT:  Send the request to the primary and claim the key there; a standby serves only replays, mismatches and keys in progress." \
  "$(err "SELECT idempotency.claim('s', 'new')")"
check "a lease that is over on the standby: 25006" "ERROR:  25006: cannot claim idempotency key \"short\" in scope \"s\" on a hot standby" \
  "$(err "SELECT idempotency.claim('s', 'short')" | sed 's/ DETAIL.*//')"
for verb in finish checkpoint release; do
  case $verb in
    finish) call="idempotency.finish('s', 'held', $held, 200)" ;;
    checkpoint) call="idempotency.checkpoint('s', 'held', $held, 'x')" ;;
    release) call="idempotency.release('s', 'held', $held)" ;;
  esac
  check "$verb on the standby: 25006" \
    "ERROR:  25006: cannot $verb idempotency key \"held\" in scope \"s\" on a hot standby DETAIL:  This server is in recovery (a read replica) and cannot write. HINT:  Send the request to the primary and $verb the key there; a standby serves only replays, mismatches and keys in progress." \
    "$(err "SELECT $call")"
done
check "once() on the standby, even for a processed key: 25006" "ERROR:  25006: cannot process idempotency key \"done\" in scope \"s\" on a hot standby" \
  "$(err "SELECT idempotency.once('s', 'done')" | sed 's/ DETAIL.*//')"
check "sweep() on the standby: 25006" "ERROR:  25006: cannot sweep expired idempotency keys on a hot standby DETAIL:  This server is in recovery (a read replica) and cannot write. HINT:  Run it on the primary." \
  "$(err "SELECT idempotency.sweep()")"
[ $FAILURES -eq 0 ]
