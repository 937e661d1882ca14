#!/usr/bin/env bash
# Monitoring: the alert rules pass promtool (check + unit tests), and Debian's
# prometheus-postgres-exporter, started on loopback against the suite cluster
# with monitoring/postgres_exporter.yml, exports the counters under docs/reference.md's
# names moving with real calls, and the stuck-work and expired-key gauges;
# on a stand-in for a Citus node (the catalog rows the queries read, as in
# test/t/006_citus_stand_in.pl) the gauges come from the coordinator only.
# Appends "<passed> <failed> monitoring" to $SUITE_COUNTS.
source "$(dirname "$0")/../lib/common.sh"
export PATH=$PG_BIN:$PATH
passed=0 failed=0
check() {  # description, then a command that must succeed
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok - $what"; else failed=$((failed + 1)); echo "FAILED - $what"; fi
}
DB=pgi_monitoring
CITUS_DB=pgi_monitoring_citus
EXPORTER_PID=
CITUS_EXPORTER_PID=
EXPORTER_ROLE=
cleanup() {
  [ -n "$EXPORTER_PID" ] && kill "$EXPORTER_PID" 2>/dev/null && wait "$EXPORTER_PID" 2>/dev/null
  [ -n "$CITUS_EXPORTER_PID" ] && kill "$CITUS_EXPORTER_PID" 2>/dev/null && wait "$CITUS_EXPORTER_PID" 2>/dev/null
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "DROP DATABASE IF EXISTS $CITUS_DB" >/dev/null 2>&1
  [ -n "$EXPORTER_ROLE" ] && psql -X -q -d postgres -c "DROP ROLE IF EXISTS $EXPORTER_ROLE" >/dev/null 2>&1
}
trap cleanup EXIT

# --- alert rules
check "promtool check rules monitoring/alerts.yml" promtool check rules "$REPO_ROOT/monitoring/alerts.yml"
check "promtool test rules monitoring/alerts_test.yml (each alert fires on its trouble, not on healthy series)" \
  promtool test rules "$REPO_ROOT/monitoring/alerts_test.yml"

# --- the exporter against the suite cluster
PGOPTIONS=--client-min-messages=warning psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB "$@"; }
q -c 'CREATE EXTENSION pg_idempotency'
# The exporter runs as a role with exactly the grants monitoring/postgres_exporter.yml
# and docs/operations.md give it, so a missing one shows as missing metrics.
EXPORTER_ROLE=pgi_exporter_$$
q -c "CREATE ROLE $EXPORTER_ROLE LOGIN" \
  -c "GRANT USAGE ON SCHEMA idempotency TO $EXPORTER_ROLE" \
  -c "GRANT SELECT ON idempotency.keys, idempotency.stats TO $EXPORTER_ROLE" \
  -c "GRANT EXECUTE ON FUNCTION idempotency._stats() TO $EXPORTER_ROLE"
port=$(free_port)
DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=$EXPORTER_ROLE dbname=$DB sslmode=disable" \
  prometheus-postgres-exporter --web.listen-address=127.0.0.1:$port \
  --extend.query-path="$REPO_ROOT/monitoring/postgres_exporter.yml" \
  --disable-default-metrics --disable-settings-metrics --log.level=warn >"/tmp/pgi_exporter.$$.log" 2>&1 &
EXPORTER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.1; done

scrape() { curl -fs "http://127.0.0.1:$port/metrics"; }
# value NAME: the sample of metric NAME (any labels) in the last scrape.
value() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 {print $2; exit}' "$SCRAPE"; }
SCRAPE=$(mktemp)
trap 'cleanup; rm -f "$SCRAPE" /tmp/pgi_exporter.$$.log' EXIT

scrape >"$SCRAPE"
counters=(claims replays in_progress mismatches takeovers finishes releases swept)
declare -A before
missing=
for c in "${counters[@]}"; do
  before[$c]=$(value pg_idempotency_${c}_total)
  [ -n "${before[$c]}" ] || missing="$missing pg_idempotency_${c}_total"
done
check "every counter is exported under its docs/reference.md name (missing:${missing:- none})" test -z "$missing"
check "the stuck-work gauges are exported (0 in a fresh database)" \
  test "$(value pg_idempotency_stuck_keys)" = 0 -a "$(value pg_idempotency_stuck_oldest_seconds)" = 0
check "the expired-key gauges are exported" test -n "$(value pg_idempotency_expired_keys)"

# CREATE EXTENSION gave this database a sweeper turn at once: let it end, so
# that the expired keys below stay until this test sweeps them.
for _ in $(seq 1 100); do
  [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB' AND backend_type = 'pg_idempotency sweeper'")" = 0 ] && break
  sleep 0.1
done

# Real calls: 5 claimed and finished, 3 replays, 2 mismatches, 1 in_progress,
# 1 release, 1 takeover (2 claims), 4 expired keys swept.
q >/dev/null <<'SQL'
SELECT idempotency.finish('m', 'k' || g, (idempotency.claim('m', 'k' || g, '\x01')).token, 200) FROM generate_series(1, 5) g;
SELECT idempotency.claim('m', 'k1', '\x01'), idempotency.claim('m', 'k2'), idempotency.claim('m', 'k3');
SELECT idempotency.claim('m', 'k1', '\x02'), idempotency.claim('m', 'k4', '\x02');
SELECT idempotency.claim('m', 'held', lease => '1 hour');
SELECT idempotency.claim('m', 'held');
SELECT idempotency.release('m', 'r', (idempotency.claim('m', 'r')).token);
SELECT idempotency.claim('m', 'stuck', lease => '1 ms');
SELECT pg_sleep(0.05);
SELECT idempotency.claim('m', 'stuck', lease => '1 ms');
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, response_status)
SELECT 'old', 'k' || g, 'completed', g, 1, now() - interval '3 hours', now() - interval '3 hours',
       now() - interval '2 hours', 200 FROM generate_series(1, 4) g;
SQL
scrape >"$SCRAPE"
check "expired keys show in the gauges (4, expired 2 h ago)" \
  awk -v n="$(value pg_idempotency_expired_keys)" -v s="$(value pg_idempotency_expired_oldest_seconds)" \
  'BEGIN {exit !(n == 4 && s > 7100)}'
q -c 'SELECT idempotency.sweep()' >/dev/null
scrape >"$SCRAPE"
declare -A want=([claims]=9 [replays]=3 [in_progress]=1 [mismatches]=2 [takeovers]=1 [finishes]=5 [releases]=1 [swept]=4)
for c in "${counters[@]}"; do
  after=$(value pg_idempotency_${c}_total)
  delta=$(awk -v a="$after" -v b="${before[$c]}" 'BEGIN {print a - b}')
  check "pg_idempotency_${c}_total moved by ${want[$c]} (moved by $delta)" test "$delta" = "${want[$c]}"
done
check "after sweep() the expired-key gauge is 0" test "$(value pg_idempotency_expired_keys)" = 0
check "pg_idempotency_last_sweep_timestamp_seconds is recent" \
  awk -v t="$(value pg_idempotency_last_sweep_timestamp_seconds)" -v now="$(date +%s)" 'BEGIN {exit !(now - t < 60)}'
# 'stuck' was taken over with another 1 ms lease: in_progress past it.
sleep 1.1
scrape >"$SCRAPE"
check "a key held past its lease shows in the gauges (1 key, lease over for >= 1 s)" \
  awk -v n="$(value pg_idempotency_stuck_keys)" -v s="$(value pg_idempotency_stuck_oldest_seconds)" \
  'BEGIN {exit !(n == 1 && s >= 1)}'
q -c "SELECT idempotency.finish('m', 'stuck', token, 200) FROM idempotency.keys WHERE scope = 'm' AND key = 'stuck'" >/dev/null
scrape >"$SCRAPE"
check "once finished, it leaves the gauges" test "$(value pg_idempotency_stuck_keys)" = 0

# --- a Citus stand-in: the key gauges count the whole distributed table on
# every node, so only the coordinator (Citus group 0) emits them; a worker
# emits the counters alone. Here the "distributed" table is the plain one.
PGOPTIONS=--client-min-messages=warning psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $CITUS_DB" \
  -c "CREATE DATABASE $CITUS_DB" >/dev/null
# Stuck keys (in_progress past their lease, not expired), which no sweeper
# deletes.
psql -X -q -v ON_ERROR_STOP=1 -d $CITUS_DB >/dev/null <<'SQL'
CREATE EXTENSION pg_idempotency;
SET allow_system_table_mods = on;
INSERT INTO pg_catalog.pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)
VALUES (99917, 'citus', 10, 11, false, 'stand-in');
CREATE TABLE pg_catalog.pg_dist_local_group (groupid int NOT NULL);
INSERT INTO pg_catalog.pg_dist_local_group VALUES (2);
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
SELECT 'stuck', 'k' || g, 'in_progress', g, 1, now() - interval '1 hour', now() + interval '1 day',
       now() - interval '30 minutes' FROM generate_series(1, 3) g;
SQL
citus_port=$(free_port)
DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$CITUS_DB sslmode=disable" \
  prometheus-postgres-exporter --web.listen-address=127.0.0.1:$citus_port \
  --extend.query-path="$REPO_ROOT/monitoring/postgres_exporter.yml" \
  --disable-default-metrics --disable-settings-metrics --log.level=warn >>"/tmp/pgi_exporter.$$.log" 2>&1 &
CITUS_EXPORTER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$citus_port/metrics" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$citus_port/metrics" >"$SCRAPE"
check "a Citus worker exports the counters" test -n "$(value pg_idempotency_claims_total)"
check "a Citus worker exports no key gauges (they would count the distributed table again)" \
  test -z "$(value pg_idempotency_expired_keys)$(value pg_idempotency_stuck_keys)"
psql -X -q -d $CITUS_DB -c 'UPDATE pg_catalog.pg_dist_local_group SET groupid = 0' >/dev/null
curl -fs "http://127.0.0.1:$citus_port/metrics" >"$SCRAPE"
check "the Citus coordinator exports the key gauges (3 stuck keys)" \
  test "$(value pg_idempotency_stuck_keys)" = 3 -a "$(value pg_idempotency_expired_keys)" = 0

if [ $failed -ne 0 ]; then
  echo "--- exporter log"; cat "/tmp/pgi_exporter.$$.log"
  echo "--- last scrape (pg_idempotency)"; grep pg_idempotency "$SCRAPE"
fi
echo "$passed $failed monitoring" >>"$SUITE_COUNTS"
echo "monitoring: $passed passed, $failed failed"
[ $failed -eq 0 ]
