#!/usr/bin/env bash
# The upgrade paths 1.0 -> 1.2 and 1.1 -> 1.2, on the shared cluster. For each
# old version: a database created at it is served by the installed (1.2)
# library (the rolling upgrade), then ALTER EXTENSION ... UPDATE, compared with
# a fresh 1.2 install: the whole catalog footprint (test/upgrade/catalog.sql),
# pg_dump --schema-only, again after the README's grants made after the
# update, and for grants made before it (claim is re-created by 1.2: its
# grants must survive, and pg_dump must still dump them); then the keys
# survive pg_dump/pg_restore. Any difference fails with a unified diff.
source "$(dirname "$0")/../lib/common.sh"
set -u
NEW=idem_upgrade_fresh RESTORED=idem_upgrade_restored APP=idem_upgrade_app APP2=idem_upgrade_app2
OLD_VERSIONS=(1.0 1.1)
old_db() { echo "idem_upgrade_from_${1/./}"; }      # updated, granted after the update
granted_db() { echo "idem_upgrade_granted_${1/./}"; }  # granted before the update
all_dbs() { for v in "${OLD_VERSIONS[@]}"; do old_db "$v"; granted_db "$v"; done; echo $NEW $RESTORED; }
work=$(mktemp -d)
passed=0 failed=0

psql_in() { local db=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
cleanup_dbs() { for db in $(all_dbs); do dropdb --if-exists "$db" >/dev/null 2>&1; done; }
cleanup() {
  cleanup_dbs
  psql_in postgres -c "DROP ROLE IF EXISTS $APP" -c "DROP ROLE IF EXISTS $APP2" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "ok   - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1" >&2; failed=$((failed + 1)); }
# same NAME FILE_A FILE_B: passes when the files are identical, else shows the diff
same() {
  if diff -u --label "updated" --label "fresh 1.2" "$2" "$3" >"$work/diff"; then
    ok "$1"
  else
    not_ok "$1: an updated database differs from a fresh 1.2:"
    head -c 20000 "$work/diff" >&2
  fi
}
catalog() { psql_in "$1" -f "$REPO_ROOT/test/upgrade/catalog.sql" >"$2" 2>&1; }
# pg_dump 15.14+ writes \restrict lines with a random key each run.
schema_dump() { pg_dump --schema-only "$1" 2>&1 | grep -Ev '^\\(un)?restrict ' >"$2"; }
# The README's grants, plus a grant option on claim alone: claim(signature).
grants() {
  echo "GRANT USAGE ON SCHEMA idempotency TO $APP;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO $APP;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO $APP;
GRANT SELECT ON idempotency.stats TO $APP;
GRANT EXECUTE ON FUNCTION idempotency.claim($1) TO $APP2 WITH GRANT OPTION;"
}
CLAIM_BEFORE_12="text, text, bytea, interval, interval, interval"
CLAIM_12="text, text, bytea, interval, interval, interval, text"

cleanup_dbs
psql_in postgres -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS $APP" -c "DROP ROLE IF EXISTS $APP2" \
  -c "CREATE ROLE $APP" -c "CREATE ROLE $APP2" >/dev/null

for v in "${OLD_VERSIONS[@]}"; do
  for db in $(old_db "$v") $(granted_db "$v"); do
    createdb "$db" || { echo "0 1 upgrade" >>"$SUITE_COUNTS"; exit 1; }
    psql_in "$db" -c "CREATE EXTENSION pg_idempotency VERSION '$v'" >/dev/null
  done
  db=$(old_db "$v")
  # 1. A database still at an old version is served by the installed (1.2)
  #    library: the rolling upgrade. claim takes six arguments there and
  #    returns nine attributes, without trace_context. The keys are kept
  #    through the update and the dump.
  if psql_in "$db" -v version="$v" >"$work/at$v.out" 2>&1 <<'SQL'
SELECT extversion = :'version' AS at_old FROM pg_extension WHERE extname = 'pg_idempotency' \gset
\if :at_old
\else
  \echo 'not at the old version' \\ SELECT 1/0;
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
SELECT count(*) = 9 AS nine FROM pg_attribute WHERE attrelid = 'idempotency.claim_result'::regclass AND attnum > 0 \gset
SELECT count(*) = 9 AS nine_returned FROM (SELECT (idempotency.claim('upgrade', 'done')).*) AS c, LATERAL json_each(row_to_json(c)) \gset
SELECT NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'idempotency.keys'::regclass AND attname = 'trace_context') AS no_column \gset
SELECT :'finished' AND :'replayed' AND :'checkpointed' AND :'released' AND :'looked_up' AND :'swept' AND :'stats'
       AND :'nine' AND :'nine_returned' AND :'no_column' AS all_ok \gset
\if :all_ok
\else
  \echo :finished :replayed :checkpointed :released :looked_up :swept :stats :nine :nine_returned :no_column
  SELECT 1/0;
\endif
SELECT count(*) = (CASE WHEN :'version' = '1.0' THEN 0 ELSE 1 END) AS once_as_expected
FROM pg_proc WHERE proname = 'once' AND pronamespace = 'idempotency'::regnamespace \gset
\if :once_as_expected
\else
  SELECT 1/0;
\endif
SQL
  then ok "a database at $v is served by the installed library (claim with six arguments and nine attributes, finish, replay, checkpoint, release, lookup, sweep, stats)"
  else not_ok "a database at $v is served by the installed library"; cat "$work/at$v.out" >&2; fi
  # grants made while at the old version, on the old claim
  psql_in "$(granted_db "$v")" -c "$(grants "$CLAIM_BEFORE_12")" >/dev/null
done
# once() came with 1.1: a grant ON ALL FUNCTIONS made at 1.0 did not cover it.
psql_in "$(granted_db 1.0)" -c "ALTER EXTENSION pg_idempotency UPDATE TO '1.1'" \
  -c "GRANT EXECUTE ON FUNCTION idempotency.once(text, text, interval, interval) TO $APP" >/dev/null

# 2. Update in place; install 1.2 fresh next to them.
psql_in "$NEW" -c "SELECT 1" >/dev/null 2>&1 || createdb "$NEW"
if psql_in "$NEW" -c "CREATE EXTENSION pg_idempotency" >"$work/update.out" 2>&1; then
  default=$(psql_in "$NEW" -Atc "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_idempotency'")
  for v in "${OLD_VERSIONS[@]}"; do
    for db in $(old_db "$v") $(granted_db "$v"); do
      if psql_in "$db" -c "ALTER EXTENSION pg_idempotency UPDATE" >>"$work/update.out" 2>&1 &&
         [ "$(psql_in "$db" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'")" = "$default" ]
      then ok "ALTER EXTENSION pg_idempotency UPDATE from $v reaches the default version $default ($db)"
      else not_ok "ALTER EXTENSION pg_idempotency UPDATE from $v ($db)"; cat "$work/update.out" >&2; fi
    done
  done
else
  not_ok "CREATE EXTENSION pg_idempotency (fresh)"; cat "$work/update.out" >&2
fi
# claim's planner support function came with 1.2: a grant ON ALL FUNCTIONS
# made before the update did not cover it. (Nothing needs it: the planner
# calls it without a privilege check; the grant only keeps the catalogs equal.)
for v in "${OLD_VERSIONS[@]}"; do
  psql_in "$(granted_db "$v")" -c "GRANT EXECUTE ON FUNCTION idempotency._claim_support(internal) TO $APP" >/dev/null
done

# 3. The same objects with the same properties, ACLs, init privileges,
#    role dependencies and pg_dump registration.
catalog "$NEW" "$work/new.catalog"
schema_dump "$NEW" "$work/new.schema.sql"
if [ -s "$work/new.catalog" ] && grep -q '^function | idempotency.claim' "$work/new.catalog"; then
  for v in "${OLD_VERSIONS[@]}"; do
    db=$(old_db "$v")
    catalog "$db" "$work/$db.catalog"
    same "catalog from $v (functions, types, table, indexes, view, ACLs, init privileges, extconfig)" "$work/$db.catalog" "$work/new.catalog"
    schema_dump "$db" "$work/$db.schema.sql"
    same "pg_dump --schema-only from $v" "$work/$db.schema.sql" "$work/new.schema.sql"
  done
else
  not_ok "catalog query gave nothing"; cat "$work/new.catalog" >&2
fi

# 4. The grants made after the update, and those made before it (replayed by
#    the update onto the new claim), give what a fresh 1.2 granted the same
#    way has, pg_dump's output included; the roles can use the whole API.
psql_in "$NEW" -c "$(grants "$CLAIM_12")" >/dev/null
catalog "$NEW" "$work/new.granted.catalog"
schema_dump "$NEW" "$work/new.granted.sql"
if grep -q "$APP=X/" "$work/new.granted.catalog" && grep -q "$APP2=X\*/" "$work/new.granted.catalog"; then
  for v in "${OLD_VERSIONS[@]}"; do
    db=$(old_db "$v")
    psql_in "$db" -c "$(grants "$CLAIM_12")" >/dev/null
    for d in "$db" "$(granted_db "$v")"; do
      when=$([ "$d" = "$db" ] && echo "after" || echo "before")
      catalog "$d" "$work/$d.granted.catalog"
      same "catalog from $v, granted $when the update" "$work/$d.granted.catalog" "$work/new.granted.catalog"
      schema_dump "$d" "$work/$d.granted.sql"
      same "pg_dump --schema-only from $v, granted $when the update" "$work/$d.granted.sql" "$work/new.granted.sql"
    done
  done
else
  not_ok "the grants do not show in the catalog"
fi
tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
for db in $(all_dbs); do
  [ "$db" = "$RESTORED" ] && continue
  if [ "$(psql_in "$db" -Atc "SET ROLE $APP; SELECT idempotency.once('upgrade', 'consumed'); SELECT idempotency.once('upgrade', 'consumed'); SELECT (idempotency.claim('upgrade', 'consumed')).outcome; SELECT claims IS NOT NULL FROM idempotency.stats; SELECT (idempotency.claim('upgrade', 'traced', trace_context => '$tp')).trace_context = '$tp'; SELECT has_function_privilege('$APP2', 'idempotency.claim($CLAIM_12)', 'EXECUTE WITH GRANT OPTION')" 2>&1 | tr '\n' ' ')" = "t f replay t t t " ]; then
    ok "the app roles use once() and claim() with trace_context after the grants ($db)"
  else
    not_ok "the app roles use once() and claim() with trace_context after the grants ($db)"
  fi
done

# 5. pg_dump keeps the keys' rows (a configuration table) across the update,
#    trace_context included.
keys="SELECT scope, key, fingerprint, state, token, attempt, recovery_point, locked_until, created_at,
             completed_at, expires_at, response_status, response_headers, response_body, trace_context
      FROM idempotency.keys ORDER BY scope, key"
for v in "${OLD_VERSIONS[@]}"; do
  db=$(old_db "$v")
  dropdb --if-exists "$RESTORED" >/dev/null 2>&1; createdb "$RESTORED"
  if pg_dump --format=custom --file="$work/$db.dump" "$db" >"$work/dump.out" 2>&1 &&
     pg_restore --exit-on-error --dbname="$RESTORED" "$work/$db.dump" >>"$work/dump.out" 2>&1; then
    psql_in "$db" -Atc "$keys" >"$work/$db.keys"
    psql_in "$RESTORED" -Atc "$keys" >"$work/restored.keys"
    if [ "$(wc -l <"$work/$db.keys")" -ge 4 ] && grep -q "$tp" "$work/$db.keys"; then
      same "keys after pg_dump/pg_restore of the database updated from $v" "$work/$db.keys" "$work/restored.keys"
    else
      not_ok "expected at least 4 keys, one traced, in the database updated from $v"; cat "$work/$db.keys" >&2
    fi
    if [ "$(psql_in "$RESTORED" -Atc "SELECT idempotency.once('upgrade', 'consumed'); SELECT idempotency.once('upgrade', 'done'); SELECT (idempotency.claim('upgrade', 'done')).trace_context IS NULL; SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'" | tr '\n' ' ')" = "f f t 1.2 " ]; then
      ok "the restored database (from $v) answers once() and claim() from the restored keys"
    else
      not_ok "the restored database (from $v) answers once() and claim() from the restored keys"
    fi
  else
    not_ok "pg_dump/pg_restore of the database updated from $v"; cat "$work/dump.out" >&2
  fi
done

echo "$passed $failed upgrade" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
