#!/usr/bin/env bash
# scripts/demo --sql: the main job, shown in psql against a throwaway
# preloaded cluster. Every step is real SQL you can paste into your own psql.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_root
install_packages
build_extension   # the walkthrough needs only the extension
trap stop_cluster EXIT
start_cluster "idempotency.sweep_interval = '1s'"

DB=idempotency_walkthrough
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
export PGDATABASE=$DB

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m%s\033[0m\n' "$1"; psql -X -v ON_ERROR_STOP=1 -P pager=off -c "$1"; }

step "Set up: the extension and a business table"
show "CREATE EXTENSION pg_idempotency;
CREATE TABLE payments (id bigserial PRIMARY KEY, user_id int NOT NULL, amount int NOT NULL, currency text NOT NULL);"

step "Two sessions send the same request at once (a double-clicked Pay button)"
PAY_SQL="BEGIN;
SELECT outcome, attempt FROM idempotency.claim('user:42', 'order-1001', idempotency.fingerprint('{\"amount\":100,\"currency\":\"EUR\"}')) \\gset
SELECT :'outcome' = 'claimed' AS won \\gset
\\if :won
  INSERT INTO payments (user_id, amount, currency) VALUES (42, 100, 'EUR') RETURNING id AS payment_id \\gset
  -- the payment provider is slow
  SELECT pg_sleep(1.5) AS slept \\gset
  SELECT idempotency.finish('user:42', 'order-1001', (idempotency.lookup('user:42', 'order-1001')).token,
                            201, convert_to(format('{\"id\":%s}', :payment_id), 'UTF8')) AS finished \\gset
  \\echo session :session: outcome=:outcome, created payment :payment_id
\\else
  \\echo session :session: outcome=:outcome, no side effect (HTTP 409, retry later)
\\endif
COMMIT;"
psql -X -q -v session=A <<<"$PAY_SQL" 2>&1 | sed 's/^/  /' &
sleep 0.3
psql -X -q -v session=B <<<"$PAY_SQL" 2>&1 | sed 's/^/  /'
wait
show "SELECT count(*) AS payments FROM payments;"

step "The client retries after a timeout: the stored response is replayed, nothing runs twice"
show "SELECT outcome, response_status, convert_from(response_body, 'UTF8') AS body
FROM idempotency.claim('user:42', 'order-1001', idempotency.fingerprint('{\"currency\": \"EUR\", \"amount\": 100}'));"

step "Same key, different payload: mismatch (HTTP 422)"
show "SELECT outcome FROM idempotency.claim('user:42', 'order-1001', idempotency.fingerprint('{\"amount\":999,\"currency\":\"EUR\"}'));"

step "A multi-step job whose worker crashes after its first step"
show "SELECT outcome, attempt FROM idempotency.claim('jobs', 'export-7', NULL, NULL, lease => '2 seconds');"
show "SELECT idempotency.checkpoint('jobs', 'export-7', (idempotency.lookup('jobs', 'export-7')).token, 'uploaded-part-1', '2 seconds') AS lease_until;"
echo "  ... the worker dies here; while its lease runs, others are told to wait:"
show "SELECT outcome, locked_until FROM idempotency.claim('jobs', 'export-7');"
sleep 2.2
echo "  ... the lease is over: the next worker takes over and resumes from the recovery point"
show "SELECT outcome, attempt, recovery_point FROM idempotency.claim('jobs', 'export-7');"
show "SELECT idempotency.finish('jobs', 'export-7', (idempotency.lookup('jobs', 'export-7')).token, 200, 'exported');"

step "A queue delivers a message more than once: once() applies it once (scripts/demo --consumer: Redis Streams)"
show "CREATE TABLE ledger (business_id text NOT NULL, amount int NOT NULL);"
CONSUME_SQL="BEGIN;
SELECT idempotency.once('consumer:payments', 'pay-000042') AS first \\gset
\\if :ERROR
  \\echo delivery :delivery: 55P03, another consumer holds it: not acknowledged, the broker delivers it again later
  ROLLBACK;
\\else
  \\if :first
    INSERT INTO ledger VALUES ('pay-000042', 4200);
    SELECT pg_sleep(:hold) AS slept \\gset
    \\echo delivery :delivery: once() = true, applied, then acknowledged after COMMIT
  \\else
    \\echo delivery :delivery: once() = false, already applied: acknowledged, nothing done
  \\endif
  COMMIT;
\\endif"
psql -X -q -v delivery=1 -v hold=1 <<<"$CONSUME_SQL" 2>&1 | sed 's/^/  /' &
sleep 0.3
psql -X -q -v delivery=2 -v hold=0 <<<"$CONSUME_SQL" 2>&1 | grep -v '^DETAIL\|^HINT' | sed 's/^/  /'
wait
psql -X -q -v delivery=3 -v hold=0 <<<"$CONSUME_SQL" 2>&1 | sed 's/^/  /'
show "SELECT count(*) AS ledger_rows FROM ledger;"

step "Keys expire after their ttl and the background sweeper removes them"
show "SELECT outcome FROM idempotency.claim('user:42', 'short-lived', ttl => '1 second', lease => '1 second');"
show "SELECT count(*) AS stored FROM idempotency.keys WHERE key = 'short-lived';"
for _ in $(seq 1 20); do
  sleep 0.5
  [ "$(psql -X -At -c "SELECT count(*) FROM idempotency.keys WHERE key = 'short-lived'")" = 0 ] && break
done
show "SELECT count(*) AS stored_after_sweep FROM idempotency.keys WHERE key = 'short-lived';"
show "SELECT claims, replays, in_progress, mismatches, takeovers, finishes, swept FROM idempotency.stats;"
echo
echo "Done: one payment for two concurrent requests, a replay, a mismatch, a takeover, a message applied once and a sweep."
