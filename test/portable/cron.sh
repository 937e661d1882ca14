#!/usr/bin/env bash
# Sweeping the portable edition with pg_cron, on a cluster of its own where
# pg_cron (Debian's postgresql-NN-cron) is preloaded and pg_idempotency is not:
# the edition needs nothing preloaded. The job is scheduled by the role that
# owns the edition (no superuser) with the README's one call; pg_cron 1.4
# runs jobs at the top of a minute, so this waits up to ~70 s.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
source "$PORTABLE_ROOT/scripts/lib/common.sh"
need_root
trap stop_cluster EXIT
trap 'exit 130' INT TERM
start_cluster "shared_preload_libraries = 'pg_cron'" "cron.database_name = 'app'" \
  "cron.use_background_workers = on" "max_worker_processes = 16" >/dev/null 2>&1 || { fail "a cluster with pg_cron preloaded"; exit 1; }
check "pg_idempotency is not preloaded here" "pg_cron" "$(sql postgres -c "SHOW shared_preload_libraries")"
DB=app
fresh_db $DB
# pg_cron lives in the edition's database (cron.database_name), as a managed
# service's admin sets it up; its owner schedules with its own rights.
sql $DB -c "CREATE EXTENSION pg_cron" -c "GRANT USAGE ON SCHEMA cron TO $OWNER" >/dev/null
out=$(install_portable $DB 2>&1); check "installed by $OWNER" "" "$out"
sql $DB <<'SQL' >/dev/null
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, response_status)
SELECT 'cron', 'expired-' || i, 'completed', i, 1, now() - interval '2 days', now() - interval '2 days', now() - interval '1 day', 200
  FROM generate_series(1, 2000) i;
-- expired, but its holder's lease still runs: never swept
INSERT INTO idempotency.keys (scope, key, state, token, attempt, locked_until, created_at, expires_at)
VALUES ('cron', 'leased', 'in_progress', 1, 1, now() + interval '1 hour', now() - interval '1 day', now() - interval '1 hour');
SQL
sql $DB -c "SELECT outcome FROM idempotency.claim('cron', 'live')" >/dev/null
# The README's call, as the owner of the edition (no superuser).
job=$(sql $DB -U "$OWNER" -c "SELECT cron.schedule('idempotency-sweep', '* * * * *', 'SELECT idempotency.sweep()')")
check "scheduled by $OWNER" "yes" "$([ -n "$job" ] && echo yes)"
left=2000
for _ in $(seq 1 80); do
  left=$(sql $DB -c "SELECT count(*) FROM idempotency.keys WHERE key LIKE 'expired-%'")
  [ "$left" = 0 ] && break
  sleep 1
done
check "pg_cron swept the expired keys" "0" "$left"
check "a leased in_progress key and a live key stay" "leased live" \
  "$(sql $DB -c "SELECT string_agg(key, ' ' ORDER BY key) FROM idempotency.keys WHERE scope = 'cron'" | head -c 200)"
check "the job ran as $OWNER and succeeded" "$OWNER succeeded" \
  "$(sql $DB -c "SELECT j.username || ' ' || d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid) ORDER BY d.start_time LIMIT 1")"
sql $DB -U "$OWNER" -c "SELECT cron.unschedule('idempotency-sweep')" >/dev/null

# Without the library the settings are placeholders: same names, defaults and units.
check "settings as placeholders (defaults; '2h'; a bare number of ms; max_response_size)" \
  "1 day 00:01:00|02:00:00 00:00:01.5|54000" \
  "$(sql $DB -c "SELECT (expires_at - now()) || ' ' || (locked_until - now()) FROM idempotency.claim('cron', 'defaults')")|$(sql $DB \
     -c "SET idempotency.default_ttl = '2h'" -c "SET idempotency.default_lease = 1500" \
     -c "SELECT (expires_at - now()) || ' ' || (locked_until - now()) FROM idempotency.claim('cron', 'set')")|$(sql $DB \
     -c "SET idempotency.max_response_size = 10" -c "\set VERBOSITY sqlstate" -c "\set ON_ERROR_STOP off" \
     -c "SELECT idempotency.finish('cron', 'set', token, 200, 'eleven byte') FROM idempotency.keys WHERE key = 'set'" 2>&1 | sed 's/^ERROR:  //')"
[ $FAILURES -eq 0 ]
