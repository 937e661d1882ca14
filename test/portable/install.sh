#!/usr/bin/env bash
# Installing the portable edition: by a role that is no superuser; the
# discipline of what it creates (no SECURITY DEFINER, pinned search_path, no
# session state); a second run keeps keys, grants, policies and functions;
# the refusal beside the extension or a foreign schema, changing nothing.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
DB=portable_install
trap 'drop_db $DB; drop_db portable_beside_ext; drop_db portable_foreign' EXIT

fresh_db $DB
check "the installing role is no superuser" "f" "$(sql postgres -c "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = '$OWNER'")"
out=$(install_portable $DB 2>&1); rc=$?
check "psql -f by a non-superuser with CREATE on the database" "0:" "$rc:$out"
check "no SECURITY DEFINER function" "0" "$(sql $DB -c "SELECT count(*) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace AND prosecdef")"
check "search_path pinned on every function" "0" \
  "$(sql $DB -c "SELECT count(*) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace
                  AND NOT coalesce(proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']")"
check "nothing of the API granted to PUBLIC" "0" \
  "$(sql $DB -c "SELECT count(*) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace AND proname !~ '^_'
                  AND has_function_privilege('public', oid, 'EXECUTE')")"
check "stats: the extension's columns, all NULL" "claims replays in_progress mismatches takeovers finishes releases swept last_sweep_at|t" \
  "$(sql $DB -c "SELECT string_agg(attname, ' ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'idempotency.stats'::regclass")|$(sql $DB -c "SELECT s IS NULL FROM idempotency.stats s")"

# No session state: after a transaction that claimed (with a wait and a
# takeover), finished and swept, the session holds no lock, no temporary
# table, and every setting is as it was.
state=$(sql $DB <<'SQL'
-- (plpgsql.* settings appear when PL/pgSQL is first loaded in a session: not ours)
SELECT md5(string_agg(name || '=' || setting, ',' ORDER BY name)) AS before FROM pg_settings WHERE name NOT LIKE 'plpgsql.%' \gset
BEGIN;
SELECT outcome FROM idempotency.claim('sess', 'a', wait => '1 second');
SELECT idempotency.finish('sess', 'a', (SELECT token FROM idempotency.keys WHERE scope = 'sess' AND key = 'a'), 200);
SELECT outcome FROM idempotency.claim('sess', 'b', lease => '1 millisecond', ttl => '1 millisecond');
SELECT idempotency.once('sess', 'c', wait => '1 second');
COMMIT;
SELECT pg_sleep(0.01);
SELECT outcome FROM idempotency.claim('sess', 'b', wait => '1 second');
SELECT idempotency.sweep();
SELECT 'locks=' || count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory';
SELECT 'temp=' || count(*) FROM pg_class WHERE relpersistence = 't';
SELECT 'settings same=' || (md5(string_agg(name || '=' || setting, ',' ORDER BY name)) = :'before') FROM pg_settings WHERE name NOT LIKE 'plpgsql.%';
SQL
)
check "no session state left (locks, temporary tables, settings)" "locks=0 temp=0 settings same=true" \
  "$(echo "$state" | grep -E '^(locks|temp|settings)' | tr '\n' ' ' | sed 's/ $//')"

# A second run keeps every key, grant, policy and function (upgrade in place).
sql $DB -c "CREATE ROLE pgi_install_app" 2>/dev/null
sql $DB <<SQL >/dev/null
GRANT USAGE ON SCHEMA idempotency TO pgi_install_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi_install_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi_install_app;
ALTER TABLE idempotency.keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_scope ON idempotency.keys TO pgi_install_app USING (scope LIKE 'app%');
SQL
make_keys $DB rerun
before=$(keys_digest $DB)
oids=$(sql $DB -c "SELECT string_agg(oid::text, ',' ORDER BY oid) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace")
acl=$(sql $DB -c "SELECT relacl::text || relrowsecurity FROM pg_class WHERE oid = 'idempotency.keys'::regclass")
out=$(install_portable $DB 2>&1); rc=$?
check "a second run succeeds" "0:" "$rc:$out"
check "a second run keeps every key (all columns, every state)" "$before" "$(keys_digest $DB)"
check "a second run keeps the functions (same oids)" "$oids" \
  "$(sql $DB -c "SELECT string_agg(oid::text, ',' ORDER BY oid) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace")"
check "a second run keeps grants and row-level security" "$acl|1" \
  "$(sql $DB -c "SELECT relacl::text || relrowsecurity FROM pg_class WHERE oid = 'idempotency.keys'::regclass")|$(sql $DB -c "SELECT count(*) FROM pg_policies WHERE schemaname = 'idempotency'")"
check "after the second run: replay, in_progress, expired re-claimed as before" "replay|in_progress|claimed 1 -" \
  "$(sql $DB -c "SELECT outcome FROM idempotency.claim('rerun', 'done', idempotency.fingerprint('{\"b\":2}'))")|$(sql $DB -c "SELECT outcome FROM idempotency.claim('rerun', 'leased')")|$(sql $DB -c "SELECT outcome || ' ' || attempt || ' ' || coalesce(recovery_point, '-') FROM idempotency.claim('rerun', 'expired')")"
check "the app role works after the second run (grants kept, RLS applies)" "claimed|0" \
  "$(sql $DB -c "SET ROLE pgi_install_app" -c "SELECT outcome FROM idempotency.claim('app1', 'k')")|$(sql $DB -c "SET ROLE pgi_install_app" -c "SELECT count(*) FROM idempotency.keys WHERE scope = 'rerun'")"
sql $DB -c "DROP OWNED BY pgi_install_app" -c "DROP ROLE pgi_install_app" >/dev/null

# 1.1 -> 1.2 in place: the 1.1 file (kept in test/portable/old/), keys and an
# application role's grants, then this file. Every key is kept; claim() gains
# trace_context and keeps its grants (it is re-created with a new signature).
fresh_db portable_from_11
"$PG_BIN/psql" -X -q -U "$OWNER" -d portable_from_11 -f test/portable/old/pg_idempotency_portable-1.1.sql >/dev/null 2>&1
sql postgres -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS pgi_install_app11" -c "CREATE ROLE pgi_install_app11" >/dev/null
sql portable_from_11 <<SQL >/dev/null
GRANT USAGE ON SCHEMA idempotency TO pgi_install_app11;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi_install_app11;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi_install_app11;
SQL
make_keys portable_from_11 up
before=$(keys_digest portable_from_11)
check "1.1 installed from the kept 1.1 file" "1.1" "$(sql portable_from_11 -c "SELECT idempotency._portable_version()")"
out=$(install_portable portable_from_11 2>&1); rc=$?
check "the 1.2 file upgrades 1.1 in place" "0:|1.2" "$rc:$out|$(sql portable_from_11 -c "SELECT idempotency._portable_version()")"
check "the upgrade keeps every key" "$before" "$(keys_digest portable_from_11)"
tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
check "after the upgrade: one claim(), with trace_context, granted to the app role as before" \
  "1|claimed $tp|replay $tp|replay -" \
  "$(sql portable_from_11 -c "SELECT count(*) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace AND proname LIKE 'claim%'")|$(sql portable_from_11 -c "SET ROLE pgi_install_app11" -c "SELECT outcome || ' ' || trace_context FROM idempotency.claim('up', 'new', trace_context => '$tp')")|$(sql portable_from_11 -c "SET ROLE pgi_install_app11" -c "SELECT idempotency.finish('up', 'new', (SELECT token FROM idempotency.keys WHERE scope = 'up' AND key = 'new'), 200)" >/dev/null; sql portable_from_11 -c "SET ROLE pgi_install_app11" -c "SELECT outcome || ' ' || trace_context FROM idempotency.claim('up', 'new')")|$(sql portable_from_11 -c "SELECT outcome || ' ' || coalesce(trace_context, '-') FROM idempotency.claim('up', 'done', idempotency.fingerprint('{\"b\":2}'))")"
check "the upgrade keeps the grants: the same ACL on claim as before, for the new signature" "t" \
  "$(sql portable_from_11 -c "SELECT has_function_privilege('pgi_install_app11', 'idempotency.claim(text, text, bytea, interval, interval, interval, text)', 'EXECUTE')")"
out=$(install_portable portable_from_11 2>&1); rc=$?
check "running the 1.2 file again changes nothing" "0:|$(keys_digest portable_from_11)" "$rc:$out|$(keys_digest portable_from_11)"
drop_db portable_from_11; sql postgres -c "DROP ROLE IF EXISTS pgi_install_app11" >/dev/null

# Beside the extension: a clear error and nothing changed (as superuser too).
fresh_db portable_beside_ext
sql portable_beside_ext -c "CREATE EXTENSION pg_idempotency" >/dev/null
sql portable_beside_ext -c "SELECT token FROM idempotency.claim('ext', 'k')" >/dev/null
catalog="SELECT md5(string_agg(c, ',' ORDER BY c)) FROM (
  SELECT oid::regprocedure::text || prosrc AS c FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace
  UNION ALL SELECT relname::text || relkind::text FROM pg_class WHERE relnamespace = 'idempotency'::regnamespace
  UNION ALL SELECT typname FROM pg_type WHERE typnamespace = 'idempotency'::regnamespace
  UNION ALL SELECT obj_description('idempotency'::regnamespace, 'pg_namespace')) s"
before=$(sql portable_beside_ext -c "$catalog")$(keys_digest portable_beside_ext)
for role in "$OWNER" postgres; do
  out=$(install_portable portable_beside_ext "$role" 2>&1); rc=$?
  check "beside the extension ($role): refused with a clear error" "3:yes" \
    "$rc:$(echo "$out" | grep -q 'ERROR:  the pg_idempotency extension is installed in database "portable_beside_ext": the portable edition was not installed' && echo yes)"
  check "beside the extension ($role): nothing changed" "$before" "$(sql portable_beside_ext -c "$catalog")$(keys_digest portable_beside_ext)"
done

# The same surface as the extension: functions (arguments, defaults, result,
# volatility, strictness), types, table columns, indexes and the view.
surface="SELECT string_agg(x, E'\n' ORDER BY x COLLATE \"C\") FROM (
  SELECT 'function ' || proname || '(' || pg_get_function_arguments(oid) || ') ' || pg_get_function_result(oid)
         || ' ' || provolatile::text || ' ' || proisstrict || ' ' || proretset AS x
    FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace AND proname !~ '^_'
  UNION ALL SELECT 'type ' || t.typname || ' ' || coalesce((SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid),
         (SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = t.typrelid AND attnum > 0))
    FROM pg_type t WHERE t.typnamespace = 'idempotency'::regnamespace AND t.typtype IN ('e', 'c') AND t.typname <> 'stats'
  UNION ALL SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
   WHERE c.relnamespace = 'idempotency'::regnamespace AND c.relkind IN ('r', 'v') AND a.attnum > 0
  UNION ALL SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'idempotency.keys'::regclass
  UNION ALL SELECT 'reloptions ' || array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'idempotency.keys'::regclass) s"
check "the extension's surface: functions, types, columns, indexes, view" \
  "$(sql portable_beside_ext -c "$surface" || echo "(failed)")" "$(sql $DB -c "$surface" || echo "(failed)")"

# A schema idempotency that is not ours: refused, nothing changed.
fresh_db portable_foreign
sql portable_foreign -c "CREATE SCHEMA idempotency AUTHORIZATION $OWNER" -c "CREATE TABLE idempotency.mine (x int)" >/dev/null
out=$(install_portable portable_foreign 2>&1); rc=$?
check "a foreign schema idempotency: refused" "3:yes" "$rc:$(echo "$out" | grep -q 'holds objects that are not the portable edition' && echo yes)"
check "a foreign schema idempotency: nothing changed" "mine" \
  "$(sql portable_foreign -c "SELECT string_agg(relname, ',') FROM pg_class WHERE relnamespace = 'idempotency'::regnamespace")"

[ $FAILURES -eq 0 ]
