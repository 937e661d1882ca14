#!/usr/bin/env bash
# Everything through a real PgBouncer in transaction pooling mode, with fewer
# server connections than clients, in front of the cluster that scripts/test
# started, once per configuration the installed PgBouncer has:
#   - 1.18 (Debian 12): no prepared statement support;
#   - 1.21 and later (Debian 13 has 1.24): max_prepared_statements = 0 (off)
#     and = 100 (PgBouncer keeps named statements per client).
# In the first configuration, on the host (scripts/test runs the suite on the
# host's 15 with Debian 12's PgBouncer 1.18, and on 17 in its Debian 13 chroot
# with 1.24):
#   - the C++ client's GoogleTest suite, every Client in pooler mode;
#   - pooler_test's ThroughPooler.* (claim, handler and finish on one server
#     connection; a multi-step operation across server connections; default
#     clients through the pooler, none of whose calls fails);
#   - a parallel exactly-once load from pgbench (unnamed statements);
#   - the HTTP demo under idempotency-demo-load (concurrent duplicates);
#   - the Node example's tests and the portable edition's concurrency test,
#     when those exist in the tree.
# In every configuration, with the C++ client's default ClientOptions (named
# statements, no --pooler): pooler_test, the HTTP bulk-duplicate run and the
# Redis Streams consumer scenario, each with 0 failed requests. In a chroot
# only these run: the rest does not depend on how PgBouncer treats named
# statements, and the host's run has it.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pgbouncer.sh"
export PATH=$PG_BIN:$PATH

POOL_SIZE=3          # server connections per database and user
LOAD_CLIENTS=16      # pgbench clients (more than POOL_SIZE)
BULK_ROUNDS=4        # rounds of the HTTP bulk-duplicate run, each with new server connections

passed=0; failed=0
WORK=$(mktemp -d /tmp/pg_idempotency_pooler.XXXXXX)
chmod 755 "$WORK"
DEMO_PID=
cleanup() {
  [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null
  stop_pgbouncer
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

direct() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

COMBO=  # the PgBouncer configuration being tested, in every ok/fail line
ok() { passed=$((passed + 1)); log "ok [$COMBO]: $*"; }
fail() { failed=$((failed + 1)); log "FAILED [$COMBO]: $*"; }

# ---- GoogleTest, through the pooler ---------------------------------------------
# gtest_counts LOG: adds the binary's passed/failed counts (skipped tests count as neither).
gtest_counts() {
  local p f
  p=$(sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?\..*/\1/p' "$1" | tail -1)
  f=$(sed -nE 's/^ *([0-9]+) FAILED TESTS?$/\1/p' "$1" | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  [ -z "$p" ] && [ -z "$f" ] && failed=$((failed + 1))
  [ -n "$f" ] && grep -E '^\[  FAILED  \]|Failure|exception' "$1" | head -40 >&2
}
# gtests BIN...: each test binary through PgBouncer.
gtests() {
  local bin exe
  for bin in "$@"; do
    exe=$BUILD_DIR/test/cxx/$bin
    if [ ! -x "$exe" ]; then fail "$bin not built"; continue; fi
    log "$bin through PgBouncer [$COMBO]"
    PGHOST=127.0.0.1 PGPORT=$BOUNCER_PORT IDEMPOTENCY_TEST_POOLER=1 timeout 600 "$exe" >"$WORK/$bin.log" 2>&1
    gtest_counts "$WORK/$bin.log"
    log "$bin [$COMBO]: $(grep -E '^\[  (PASSED|SKIPPED|FAILED) +\] [0-9]+ tests?' "$WORK/$bin.log" | sed -E 's/, listed below://' | tr -s ' []\n' ' ')"
  done
}

# ---- a parallel exactly-once load, SQL only ------------------------------------------
# $LOAD_CLIENTS pgbench clients over $POOL_SIZE server connections race for 200
# keys: the winner of each key writes one side effect and finishes it in the
# same transaction. -M extended: unnamed statements, as any pooled client uses.
pgbench_load() {
  direct -c "DROP DATABASE IF EXISTS idempotency_pooler_load WITH (FORCE)" -c "CREATE DATABASE idempotency_pooler_load"
  direct -d idempotency_pooler_load -c "CREATE EXTENSION pg_idempotency" \
    -c "CREATE TABLE side_effects (key text NOT NULL, backend int NOT NULL DEFAULT pg_backend_pid())"
  cat >"$WORK/load.sql" <<'SQL'
\set k random(1, 200)
BEGIN;
SELECT ((c).outcome = 'claimed')::int AS won, coalesce((c).token, 0) AS token
  FROM (SELECT idempotency.claim('load', :k::int::text) AS c) s \gset
\if :won
INSERT INTO side_effects (key) VALUES (:k::int::text);
SELECT idempotency.finish('load', :k::int::text, :token::bigint, 201) AS finished \gset
\endif
COMMIT;
SQL
  log "pgbench: $LOAD_CLIENTS clients, 150 transactions each, through $POOL_SIZE server connections"
  pgbench -n -M extended -c "$LOAD_CLIENTS" -j 2 -t 150 -f "$WORK/load.sql" \
    -h 127.0.0.1 -p "$BOUNCER_PORT" idempotency_pooler_load >"$WORK/pgbench.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q "number of transactions actually processed: $((LOAD_CLIENTS * 150))/" "$WORK/pgbench.log"; then
    ok "pgbench load ran every transaction"
  else
    fail "pgbench load (exit $rc)"; tail -20 "$WORK/pgbench.log" >&2
  fi
  read -r dup_keys effects completed orphans backends < <(direct -d idempotency_pooler_load -F ' ' -c "
    SELECT (SELECT count(*) FROM (SELECT key FROM side_effects GROUP BY key HAVING count(*) > 1) d),
           (SELECT count(*) FROM side_effects),
           (SELECT count(*) FROM idempotency.keys WHERE scope = 'load' AND state = 'completed'),
           (SELECT count(*) FROM side_effects e WHERE NOT EXISTS (SELECT 1 FROM idempotency.keys k
              WHERE k.scope = 'load' AND k.key = e.key AND k.state = 'completed')),
           (SELECT count(DISTINCT backend) FROM side_effects)")
  if [ "${dup_keys:-1}" = 0 ] && [ "${orphans:-1}" = 0 ] && [ "${effects:-0}" = "${completed:-x}" ] && [ "${effects:-0}" -gt 0 ]; then
    ok "exactly once: $effects side effects for $completed completed keys, written by $backends server connections"
  else
    fail "exactly once: keys with several side effects $dup_keys, side effects $effects, completed $completed, without key $orphans"
  fi
  if [ "${backends:-0}" -le "$POOL_SIZE" ]; then
    ok "the pool held: $backends server connections served $LOAD_CLIENTS clients"
  else
    fail "more server connections ($backends) than the pool size $POOL_SIZE"
  fi
  direct -c "DROP DATABASE idempotency_pooler_load WITH (FORCE)"
}

# ---- the HTTP demo, through the pooler --------------------------------------------------
http_demo_load() {
  SERVER=$BUILD_DIR/idempotency-demo-server
  LOADER=$BUILD_DIR/idempotency-demo-load
  if [ -x "$SERVER" ] && [ -x "$LOADER" ]; then
    direct -c "DROP DATABASE IF EXISTS idempotency_pooler_demo WITH (FORCE)" -c "CREATE DATABASE idempotency_pooler_demo"
    direct -d idempotency_pooler_demo -c "CREATE EXTENSION pg_idempotency"
    POOLER_FLAG=
    "$SERVER" --help 2>&1 | grep -q -- --pooler && POOLER_FLAG=--pooler
    port=$(free_port)
    "$SERVER" --listen 127.0.0.1:$port --db "$BOUNCER dbname=idempotency_pooler_demo" $POOLER_FLAG >"$WORK/demo.log" 2>&1 &
    DEMO_PID=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/payments/count" && break; sleep 0.1; done
    log "idempotency-demo-load against the demo server ${POOLER_FLAG:-(no --pooler flag)} through PgBouncer"
    if timeout 300 "$LOADER" --url "http://127.0.0.1:$port" --keys 20 --dups 8 --concurrency 16 >"$WORK/demo-load.log" 2>&1; then
      ok "HTTP demo through PgBouncer: $(grep -iE 'payments|keys' "$WORK/demo-load.log" | tail -1)"
    else
      fail "HTTP demo through PgBouncer"; tail -30 "$WORK/demo-load.log" >&2; tail -5 "$WORK/demo.log" >&2
    fi
    count=$(curl -s "http://127.0.0.1:$port/payments/count")
    payments=$(direct -d idempotency_pooler_demo -c "SELECT count(*) FROM demo.payments")
    keys=$(direct -d idempotency_pooler_demo -c "SELECT count(*) FROM idempotency.keys WHERE state = 'completed' AND response_status = 201")
    if [ -n "$payments" ] && [ "$payments" = "$keys" ] && [[ $count == *"\"count\": $payments"* || $count == *"\"count\":$payments"* ]]; then
      ok "HTTP demo: $payments payments for $keys keys that created one"
    else
      fail "HTTP demo: payments $payments, keys with a 201 $keys, GET /payments/count $count"
    fi
    kill "$DEMO_PID"; wait "$DEMO_PID" 2>/dev/null; DEMO_PID=
    direct -c "DROP DATABASE idempotency_pooler_demo WITH (FORCE)"
  else
    fail "demo server or load client not built"
  fi
}

# ---- the Redis Streams consumer demo, through the pooler ---------------------------------
# scripts/demo --consumer's scenario (a consumer SIGKILLed between COMMIT and
# XACK, one killed mid-stream and restarted) with the consumers' database
# connections going through PgBouncer. consumer_demo [--pooler]: without the
# flag the consumers' Clients have the default options. A message whose
# processing failed ("not processed", redelivered later) counts as an error.
consumer_demo() {
  local flags=${1:-}
  if [ -f "$REPO_ROOT/scripts/lib/consumer-scenario.sh" ]; then
    (
      source "$REPO_ROOT/scripts/lib/consumer-scenario.sh"
      trap '_scenario_stop' EXIT
      log "the consumer scenario (600 payments) through PgBouncer, ${flags:-default options}"
      CONSUMER_CONNINFO="$BOUNCER" CONSUMER_FLAGS=$flags consumer_scenario 600 10
    ) >"$WORK/consumer.log" 2>&1
    rc=$?
    report=$(grep '^REPORT ' "$WORK/consumer.log")
    errors=$(grep -c 'not processed' "$WORK/consumer.log")
    value() { sed -nE "s/.* $1=([0-9]+).*/\1/p" <<<"$report"; }
    if [ $rc -eq 0 ] && [ "$(value effects)" = 600 ] && [ "$(value duplicates_in_ledger)" = 0 ] &&
      [ "$(value missing)" = 0 ] && [ "$(value pending)" = 0 ] && [ "$(value deliveries)" -ge 660 ]; then
      ok "consumer demo through PgBouncer, ${flags:-default options}: $report"
    else
      fail "consumer demo through PgBouncer, ${flags:-default options} (exit $rc): ${report:-no report}"
      tail -30 "$WORK/consumer.log" >&2
    fi
    if [ "$errors" -eq 0 ]; then
      ok "consumer demo, ${flags:-default options}: no message failed"
    else
      fail "consumer demo, ${flags:-default options}: $errors messages failed"; grep 'not processed' "$WORK/consumer.log" | head -5 >&2
    fi
  fi
}

# ---- the HTTP bulk-duplicate run, default options ---------------------------------------
# The outside check that once failed behind PgBouncer: the demo server with the
# client's default ClientOptions (named statements, no --pooler), 8 parallel
# HTTP clients sending 40 keys 3 times each. Failures came only while fresh
# Clients met fresh server connections, so each of $BULK_ROUNDS rounds starts a
# new demo server after PgBouncer's RECONNECT (new server connections).
# Every answer must be a 201 (first or replay) or a 409 (the first still
# running); then every key made exactly one payment.
http_bulk_duplicates() {
  local server=$BUILD_DIR/idempotency-demo-server round port answers=0 errors=0 codes
  if [ ! -x "$server" ]; then fail "demo server not built"; return; fi
  direct -c "DROP DATABASE IF EXISTS idempotency_pooler_bulk WITH (FORCE)" -c "CREATE DATABASE idempotency_pooler_bulk"
  direct -d idempotency_pooler_bulk -c "CREATE EXTENSION pg_idempotency"
  for round in $(seq 1 "$BULK_ROUNDS"); do
    psql -X -q -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -d pgbouncer -c RECONNECT >/dev/null 2>&1 ||
      log "PgBouncer RECONNECT failed (round $round keeps its server connections)"
    port=$(free_port)
    "$server" --listen 127.0.0.1:$port --db "$BOUNCER dbname=idempotency_pooler_bulk" >"$WORK/bulk-server.log" 2>&1 &
    DEMO_PID=$!
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$port/payments/count" && break; sleep 0.1; done
    for k in $(seq 1 40); do for _ in 1 2 3; do echo "bulk-$COMBO-$round-$k"; done; done |
      xargs -P 8 -I{} curl -s -w '\n%{http_code}\n' -X POST -H 'Content-Type: application/json' \
        -H 'Idempotency-Key: {}' -d '{"amount": 100, "currency": "EUR"}' "http://127.0.0.1:$port/payments" \
        >"$WORK/bulk.$round.out"
    codes=$(grep -E '^[0-9]{3}$' "$WORK/bulk.$round.out")
    answers=$((answers + $(grep -c . <<<"$codes")))
    errors=$((errors + $(grep -cvE '^(201|409)$' <<<"$codes")))
    awk '/^[0-9][0-9][0-9]$/ && !/^(201|409)$/ {print "answer " $0 ": " prev} {prev = $0}' "$WORK/bulk.$round.out" | head -3 >&2
    kill "$DEMO_PID"; wait "$DEMO_PID" 2>/dev/null; DEMO_PID=
  done
  if [ "$answers" -eq $((BULK_ROUNDS * 120)) ] && [ "$errors" -eq 0 ]; then
    ok "HTTP bulk duplicates, default options: $answers answers, 0 errors ($BULK_ROUNDS rounds of 40 keys x 3)"
  else
    fail "HTTP bulk duplicates, default options: $answers answers of $((BULK_ROUNDS * 120)), $errors errors"
  fi
  read -r payments keys < <(direct -d idempotency_pooler_bulk -F ' ' -c "SELECT (SELECT count(*) FROM demo.payments),
    (SELECT count(*) FROM idempotency.keys WHERE state = 'completed' AND response_status = 201)")
  if [ "${payments:-x}" = $((BULK_ROUNDS * 40)) ] && [ "$keys" = "$payments" ]; then
    ok "HTTP bulk duplicates: $payments payments for $keys keys"
  else
    fail "HTTP bulk duplicates: $payments payments, $keys keys with a 201, expected $((BULK_ROUNDS * 40))"
  fi
  direct -c "DROP DATABASE idempotency_pooler_bulk WITH (FORCE)"
}

# ---- the Node.js example's tests, through the pooler ----------------------------------------
# node-postgres sends unnamed statements unless a query is given a name, so the
# example needs nothing special behind a transaction pooler.
node_tests() {
  NODE_DIR=$REPO_ROOT/examples/node
  if [ -f "$NODE_DIR/package.json" ]; then
    if command -v node >/dev/null && command -v npm >/dev/null &&
      { [ -d "$NODE_DIR/node_modules" ] || (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1; }; then
      reporter=()
      [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 19 ] && reporter=(--test-reporter=tap)
      log "the Node example's tests through PgBouncer"
      (cd "$NODE_DIR" && PGHOST=127.0.0.1 PGPORT=$BOUNCER_PORT timeout 600 node --test "${reporter[@]}" test/) >"$WORK/node.log" 2>&1
      rc=$?
      p=$(awk '/^# pass /{print $3}' "$WORK/node.log" | tail -1); f=$(awk '/^# fail /{print $3}' "$WORK/node.log" | tail -1)
      p=${p:-0}; f=${f:-0}
      [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
      passed=$((passed + p)); failed=$((failed + f))
      log "Node example through PgBouncer: $p passed, $f failed"
      [ "$f" -gt 0 ] && grep -E '^not ok|error|Error' "$WORK/node.log" | head -30 >&2
    else
      fail "Node example: node/npm missing or npm ci failed"; tail -5 "$WORK/npm.log" >&2 2>/dev/null
    fi
  fi
}

# ---- the portable edition's concurrency test, through the pooler -------------------------
portable_tests() {
  if [ -f "$REPO_ROOT/sql/portable/pg_idempotency_portable.sql" ] && [ -f "$REPO_ROOT/test/portable/concurrency.sh" ]; then
    # As scripts/suites/15-portable.sh sets it up: the edition installed by its
    # (non-superuser) owner, an application role with the documented grants.
    (
      cd "$REPO_ROOT" && source test/portable/lib.sh
      fresh_db portable_pooler && install_portable portable_pooler >/dev/null 2>&1
      sql postgres -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS pgi_pooler_app" \
        -c "CREATE ROLE pgi_pooler_app LOGIN" >/dev/null
      sql portable_pooler -c "GRANT USAGE ON SCHEMA idempotency TO pgi_pooler_app" \
        -c "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi_pooler_app" \
        -c "GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi_pooler_app" \
        -c "CREATE SCHEMA conc AUTHORIZATION pgi_pooler_app" >/dev/null
      log "the portable edition's concurrency test through PgBouncer"
      PGHOST=127.0.0.1 PGPORT=$BOUNCER_PORT PGDATABASE=portable_pooler PGUSER=pgi_pooler_app CONC_SCHEMA=conc \
        bash test/portable/concurrency.sh 12 2
      echo "exit $?"
      drop_db portable_pooler
      sql postgres -c "DROP ROLE IF EXISTS pgi_pooler_app" >/dev/null
    ) >"$WORK/portable.log" 2>&1
    p=$(grep -c '^PASS: ' "$WORK/portable.log"); f=$(grep -c '^FAIL: ' "$WORK/portable.log")
    grep -q '^exit 0$' "$WORK/portable.log" || [ "$f" -gt 0 ] || f=1
    passed=$((passed + p)); failed=$((failed + f))
    log "portable edition through PgBouncer: $p passed, $f failed"
    [ "$f" -gt 0 ] && grep -vE '^PASS: ' "$WORK/portable.log" | tail -30 >&2
  fi
}

# ---- every PgBouncer configuration ------------------------------------------------------
# NAME|[pgbouncer] setting: the first runs everything, the others what depends
# on how PgBouncer treats named statements (the default-options checks).
CONFIGS=("pgbouncer $(pgbouncer_version)|")
if pgbouncer_at_least 1.21; then
  CONFIGS=("pgbouncer $(pgbouncer_version), max_prepared_statements = 0|max_prepared_statements = 0"
    "pgbouncer $(pgbouncer_version), max_prepared_statements = 100|max_prepared_statements = 100")
fi
first=1
for config in "${CONFIGS[@]}"; do
  COMBO=${config%%|*}
  setting=${config#*|}
  if ! start_pgbouncer "$POOL_SIZE" ${setting:+"$setting"}; then fail "pgbouncer did not start"; continue; fi
  BOUNCER="host=127.0.0.1 port=$BOUNCER_PORT user=$PGUSER"
  if [ -n "$first" ] && [ -z "${PGI_CHROOT:-}" ]; then
    gtests idempotency_client_tests idempotency_middleware_tests idempotency_pooler_tests
    pgbench_load
    http_demo_load
    consumer_demo --pooler
    node_tests
    portable_tests
  else
    gtests idempotency_pooler_tests
  fi
  http_bulk_duplicates
  consumer_demo
  stop_pgbouncer
  first=
done

echo "$passed $failed pooler" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
