#!/usr/bin/env bash
# The 1.0 -> 1.1 upgrade path, on the shared cluster: a database created at
# 1.0 (served by the installed 1.1 library), then ALTER EXTENSION ... UPDATE,
# compared with a fresh 1.1 install: the whole catalog footprint
# (test/upgrade/catalog.sql), again after the README's grants to an app role,
# and pg_dump --schema-only; then the keys survive pg_dump/pg_restore.
# Any difference fails with a unified diff.
source "$(dirname "$0")/../lib/common.sh"
set -u
OLD=idem_upgrade_from_10 NEW=idem_upgrade_fresh_11 RESTORED=idem_upgrade_restored APP=idem_upgrade_app
work=$(mktemp -d)
passed=0 failed=0

psql_in() { local db=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
cleanup() {
  for db in $OLD $NEW $RESTORED; do dropdb --if-exists "$db" >/dev/null 2>&1; done
  psql_in postgres -c "DROP ROLE IF EXISTS $APP" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
cleanup_dbs() { for db in $OLD $NEW $RESTORED; do dropdb --if-exists "$db" >/dev/null 2>&1; done; }

ok() { echo "ok   - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1" >&2; failed=$((failed + 1)); }
# same NAME FILE_A FILE_B: passes when the files are identical, else shows the diff
same() {
  if diff -u --label "updated from 1.0" --label "fresh 1.1" "$2" "$3" >"$work/diff"; then
    ok "$1"
  else
    not_ok "$1: an updated 1.0 differs from a fresh 1.1:"
    head -c 20000 "$work/diff" >&2
  fi
}
catalog() { psql_in "$1" -f "$REPO_ROOT/test/upgrade/catalog.sql" >"$2" 2>&1; }
# pg_dump 15.14+ writes \restrict lines with a random key each run.
schema_dump() { pg_dump --schema-only "$1" 2>&1 | grep -Ev '^\\(un)?restrict ' >"$2"; }

cleanup_dbs
createdb "$OLD" && createdb "$NEW" || { echo "0 1 upgrade" >>"$SUITE_COUNTS"; exit 1; }
psql_in postgres -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS $APP" -c "CREATE ROLE $APP" >/dev/null

# 1. A database still at 1.0 is served by the installed (1.1) library: the
#    rolling upgrade. Its keys are kept through the update and the dump.
if psql_in "$OLD" >"$work/at10.out" 2>&1 <<'SQL'
CREATE EXTENSION pg_idempotency VERSION '1.0';
SELECT extversion = '1.0' AS at_10 FROM pg_extension WHERE extname = 'pg_idempotency' \gset
\if :at_10
\else
  \echo 'not at 1.0' \\ SELECT 1/0;
\endif
SELECT token AS t FROM idempotency.claim('upgrade', 'done', idempotency.fingerprint('{"a": 1}')) \gset
SELECT idempotency.finish('upgrade', 'done', :t, 201, '\x00ff'::bytea, '{"h": "v"}') AS finished \gset
SELECT outcome = 'replay' AS replayed FROM idempotency.claim('upgrade', 'done', idempotency.fingerprint('{"a": 1}')) \gset
SELECT token AS t2 FROM idempotency.claim('upgrade', 'open', NULL, NULL, '1 hour') \gset
SELECT idempotency.checkpoint('upgrade', 'open', :t2, 'step-1') IS NOT NULL AS checkpointed \gset
SELECT token AS t3 FROM idempotency.claim('upgrade', 'released') \gset
SELECT idempotency.release('upgrade', 'released', :t3) AS released \gset
SELECT (idempotency.lookup('upgrade', 'done')).state = 'completed' AS looked_up \gset
SELECT idempotency.sweep() >= 0 AS swept, (SELECT count(*) FROM idempotency.stats) = 1 AS stats \gset
SELECT :'finished' AND :'replayed' AND :'checkpointed' AND :'released' AND :'looked_up' AND :'swept' AND :'stats' AS all_ok \gset
\if :all_ok
\else
  SELECT 1/0;
\endif
SELECT count(*) = 0 AS no_once FROM pg_proc WHERE proname = 'once' AND pronamespace = 'idempotency'::regnamespace \gset
\if :no_once
\else
  SELECT 1/0;
\endif
SQL
then ok "a database at 1.0 is served by the installed library (claim, finish, replay, checkpoint, release, lookup, sweep, stats)"
else not_ok "a database at 1.0 is served by the installed library"; cat "$work/at10.out" >&2; fi

# 2. Update in place; install 1.1 fresh next to it.
if psql_in "$OLD" -c "ALTER EXTENSION pg_idempotency UPDATE" >"$work/update.out" 2>&1 &&
   psql_in "$NEW" -c "CREATE EXTENSION pg_idempotency" >>"$work/update.out" 2>&1 &&
   [ "$(psql_in "$OLD" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'")" = \
     "$(psql_in "$NEW" -Atc "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_idempotency'")" ]
then ok "ALTER EXTENSION pg_idempotency UPDATE reaches the default version"
else not_ok "ALTER EXTENSION pg_idempotency UPDATE reaches the default version"; cat "$work/update.out" >&2; fi

# 3. The same objects with the same properties, ACLs, init privileges and
#    pg_dump registration.
catalog "$OLD" "$work/old.catalog"
catalog "$NEW" "$work/new.catalog"
if [ -s "$work/new.catalog" ] && grep -q '^function | idempotency.claim' "$work/new.catalog"; then
  same "catalog (functions, types, table, indexes, view, ACLs, init privileges, extconfig)" "$work/old.catalog" "$work/new.catalog"
else
  not_ok "catalog query gave nothing"; cat "$work/new.catalog" >&2
fi
schema_dump "$OLD" "$work/old.schema.sql"
schema_dump "$NEW" "$work/new.schema.sql"
same "pg_dump --schema-only" "$work/old.schema.sql" "$work/new.schema.sql"

# 4. After the README's grants to an application role, still the same, and
#    the role can use the whole API, once() included.
grants="GRANT USAGE ON SCHEMA idempotency TO $APP;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO $APP;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO $APP;
GRANT SELECT ON idempotency.stats TO $APP;"
psql_in "$OLD" -c "$grants" >/dev/null && psql_in "$NEW" -c "$grants" >/dev/null
catalog "$OLD" "$work/old.granted.catalog"
catalog "$NEW" "$work/new.granted.catalog"
if grep -q "$APP=X/" "$work/new.granted.catalog"; then
  same "catalog after GRANTs to an app role" "$work/old.granted.catalog" "$work/new.granted.catalog"
else
  not_ok "the grants do not show in the catalog"
fi
schema_dump "$OLD" "$work/old.granted.sql"
schema_dump "$NEW" "$work/new.granted.sql"
same "pg_dump --schema-only after GRANTs" "$work/old.granted.sql" "$work/new.granted.sql"
for db in $OLD $NEW; do
  if [ "$(psql_in "$db" -Atc "SET ROLE $APP; SELECT idempotency.once('upgrade', 'consumed'); SELECT idempotency.once('upgrade', 'consumed'); SELECT (idempotency.claim('upgrade', 'consumed')).outcome; SELECT claims IS NOT NULL FROM idempotency.stats" 2>&1 | tr '\n' ' ')" = "t f replay t " ]; then
    ok "the app role uses once() after the grants ($db)"
  else
    not_ok "the app role uses once() after the grants ($db)"
  fi
done

# 5. pg_dump keeps the keys' rows (a configuration table) across the update.
keys="SELECT scope, key, fingerprint, state, token, attempt, recovery_point, locked_until, created_at,
             completed_at, expires_at, response_status, response_headers, response_body
      FROM idempotency.keys ORDER BY scope, key"
createdb "$RESTORED"
if pg_dump --format=custom --file="$work/old.dump" "$OLD" >"$work/dump.out" 2>&1 &&
   pg_restore --exit-on-error --dbname="$RESTORED" "$work/old.dump" >>"$work/dump.out" 2>&1; then
  psql_in "$OLD" -Atc "$keys" >"$work/old.keys"
  psql_in "$RESTORED" -Atc "$keys" >"$work/restored.keys"
  if [ "$(wc -l <"$work/old.keys")" -ge 3 ]; then
    same "keys after pg_dump/pg_restore of the updated database" "$work/old.keys" "$work/restored.keys"
  else
    not_ok "expected at least 3 keys in the updated database"; cat "$work/old.keys" >&2
  fi
  if [ "$(psql_in "$RESTORED" -Atc "SELECT idempotency.once('upgrade', 'consumed'); SELECT idempotency.once('upgrade', 'done'); SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'" | tr '\n' ' ')" = "f f 1.1 " ]; then
    ok "the restored database answers once() from the restored keys"
  else
    not_ok "the restored database answers once() from the restored keys"
  fi
else
  not_ok "pg_dump/pg_restore of the updated database"; cat "$work/dump.out" >&2
fi

echo "$passed $failed upgrade" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
