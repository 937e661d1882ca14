#!/usr/bin/env bash
# Concurrent duplicates against the portable edition with real parallel
# clients: of N sessions claiming one new key at the same moment exactly one
# gets `claimed`, the others `in_progress` (wait 0) or, with a wait, the
# `replay` of the winner's response; never an error. Then a pgbench load of
# duplicates on a few hot keys: every key's work runs once, no transaction fails.
#
# Only standard libpq variables: point it at any server or pooler where the
# edition is installed and PGUSER has the documented grants, e.g. through
# PgBouncer in transaction mode:
#   PGHOST=127.0.0.1 PGPORT=6432 PGDATABASE=app PGUSER=app test/portable/concurrency.sh [CLIENTS] [ROUNDS]
# It creates and drops its own table portable_conc_work in PGUSER's default schema
# (or in CONC_SCHEMA) and deletes its keys (scope 'portable-conc') afterwards.
set -uo pipefail
PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin}
CLIENTS=${1:-12}
ROUNDS=${2:-5}
WORK=${CONC_SCHEMA:+$CONC_SCHEMA.}portable_conc_work
FAILURES=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILURES=$((FAILURES + 1)); }
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
TMP=$(mktemp -d /tmp/portable-conc.XXXXXX)
trap 'rm -rf "$TMP"; q -c "SET client_min_messages = warning" -c "DELETE FROM idempotency.keys WHERE scope = '"'portable-conc'"'" -c "DROP TABLE IF EXISTS $WORK" >/dev/null 2>&1' EXIT

q -c "SET client_min_messages = warning" -c "DELETE FROM idempotency.keys WHERE scope = 'portable-conc'" -c "DROP TABLE IF EXISTS $WORK" \
  -c "CREATE TABLE $WORK (key text, client int)" >/dev/null || { fail "set-up (edition installed, grants?)"; exit 1; }

# round KEY WAIT: CLIENTS psql sessions connect first (each reads its script
# from a FIFO), then all get the same claim at once; the winner holds its
# transaction open for a moment, does the work and finishes.
round() {
  local key=$1 wait=$2 i
  for ((i = 1; i <= CLIENTS; i++)); do
    rm -f "$TMP/fifo$i"; mkfifo "$TMP/fifo$i"
    q <"$TMP/fifo$i" >"$TMP/out$i" 2>&1 &
  done
  sleep 0.5   # all connected (they wait for their script)
  for ((i = 1; i <= CLIENTS; i++)); do
    cat >"$TMP/fifo$i" <<SQL &
BEGIN;
SELECT outcome AS o, token AS t FROM idempotency.claim('portable-conc', '$key', '\x01', wait => '$wait') \gset
\echo outcome=:o
SELECT :'o' = 'claimed' AS won \gset
\if :won
INSERT INTO $WORK VALUES ('$key', $i);
SELECT pg_sleep(0.3);
SELECT idempotency.finish('portable-conc', '$key', :t, 201, 'done by $i') AS finished \gset
\endif
COMMIT;
SQL
  done
  wait
  cat "$TMP"/out*
}

for ((r = 1; r <= ROUNDS; r++)); do
  out=$(round "nowait-$r" 0)
  claimed=$(grep -c '^outcome=claimed$' <<<"$out"); busy=$(grep -c '^outcome=in_progress$' <<<"$out")
  errors=$(grep -c 'ERROR' <<<"$out")
  if [ "$claimed" -eq 1 ] && [ $((claimed + busy + $(grep -c '^outcome=replay$' <<<"$out"))) -eq "$CLIENTS" ] && [ "$errors" -eq 0 ]; then
    pass "round $r, wait 0: $CLIENTS clients at once, exactly one claimed ($busy in_progress)"
  else
    fail "round $r, wait 0: claimed $claimed, in_progress $busy, errors $errors: $(grep ERROR <<<"$out" | head -2)"
  fi
  out=$(round "wait-$r" '5 seconds')
  claimed=$(grep -c '^outcome=claimed$' <<<"$out"); replay=$(grep -c '^outcome=replay$' <<<"$out")
  errors=$(grep -c 'ERROR' <<<"$out")
  if [ "$claimed" -eq 1 ] && [ "$replay" -eq $((CLIENTS - 1)) ] && [ "$errors" -eq 0 ]; then
    pass "round $r, wait 5 s: exactly one claimed, $replay replays of its response"
  else
    fail "round $r, wait 5 s: claimed $claimed, replay $replay, errors $errors: $(grep ERROR <<<"$out" | head -2)"
  fi
done
work=$(q -c "SELECT count(*) || ' ' || count(DISTINCT key) FROM $WORK")
if [ "$work" = "$((2 * ROUNDS)) $((2 * ROUNDS))" ]; then pass "the work ran once per key ($work)"; else fail "work rows/keys: $work"; fi

# pgbench (extended protocol, unnamed statements: fine through PgBouncer in transaction
# mode): CLIENTS clients for a few seconds on 20 hot keys a second; a claim
# that wins does the work and finishes in the same transaction.
q -c "TRUNCATE $WORK" >/dev/null
cat >"$TMP/hot.sql" <<SQL
\set slot random(1, 20)
BEGIN;
SELECT s.k, coalesce(c.token, 0) AS token, (c.outcome = 'claimed')::int AS won
  FROM (SELECT 'hot-' || :slot || '-' || floor(extract(epoch FROM clock_timestamp()))::bigint AS k) s,
       LATERAL idempotency.claim('portable-conc', s.k, '\x01') c \gset
\if :won
INSERT INTO $WORK VALUES (:k, :client_id);
SELECT idempotency.finish('portable-conc', :k, :token, 201, 'hot');
\endif
COMMIT;
SQL
"$PG_BIN/pgbench" -n -M extended -c "$CLIENTS" -j 2 -T 4 -f "$TMP/hot.sql" >"$TMP/pgbench.txt" 2>&1
failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$TMP/pgbench.txt")
done_=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$TMP/pgbench.txt")
dups=$(q -c "SELECT count(*) FROM (SELECT key FROM $WORK GROUP BY key HAVING count(*) > 1) d")
keys=$(q -c "SELECT count(*) FROM idempotency.keys WHERE scope = 'portable-conc' AND key LIKE 'hot-%' AND state = 'completed'")
work=$(q -c "SELECT count(*) FROM $WORK")
if [ "${failed:-x}" = 0 ] && ! grep -q -E 'ERROR|aborted' "$TMP/pgbench.txt" && [ "$dups" = 0 ] && [ "$work" = "$keys" ] && [ "${done_:-0}" -gt 0 ]; then
  pass "pgbench, $CLIENTS clients on hot keys: $done_ transactions, $keys keys, each key's work once, no error"
else
  fail "pgbench: failed ${failed:-?}, duplicated work $dups, work $work vs completed keys $keys: $(grep -m2 -E 'ERROR|aborted' "$TMP/pgbench.txt")"
fi
[ $FAILURES -eq 0 ]
