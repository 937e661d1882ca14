#!/usr/bin/env bash
# Moving between the editions in one database, with the documented commands
# (sql/portable/from_extension.sql, sql/portable/to_extension.sql), keys in
# every state: every key survives with token, attempt, recovery point, lease
# and response, as do grants and row-level security; clients see the same
# answers before and after. Round trip: extension -> portable -> extension.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
DB=portable_migrate
trap 'drop_db $DB; sql postgres -c "DROP ROLE IF EXISTS pgi_move_app" >/dev/null 2>&1' EXIT
fresh_db $DB
sql postgres -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS pgi_move_app" -c "CREATE ROLE pgi_move_app" >/dev/null
sql $DB -c "CREATE EXTENSION pg_idempotency" >/dev/null
sql $DB <<SQL >/dev/null
GRANT USAGE ON SCHEMA idempotency TO pgi_move_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi_move_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi_move_app;
GRANT SELECT ON idempotency.stats TO pgi_move_app;
ALTER TABLE idempotency.keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_only ON idempotency.keys TO pgi_move_app USING (scope LIKE 'app%') WITH CHECK (scope LIKE 'app%');
SQL
access() {  # who may do what, and the policy, as a string
  sql $DB -c "SELECT has_schema_privilege('pgi_move_app', 'idempotency', 'USAGE')
                 || ' ' || has_table_privilege('pgi_move_app', 'idempotency.keys', 'SELECT,INSERT,UPDATE,DELETE')
                 || ' ' || has_function_privilege('pgi_move_app', 'idempotency.claim(text,text,bytea,interval,interval,interval,text)', 'EXECUTE')
                 || ' ' || has_function_privilege('public', 'idempotency.claim(text,text,bytea,interval,interval,interval,text)', 'EXECUTE')
                 || ' ' || (SELECT relrowsecurity FROM pg_class WHERE oid = 'idempotency.keys'::regclass)
                 || ' ' || (SELECT string_agg(policyname || ':' || cmd || ':' || qual || ':' || with_check, ',') FROM pg_policies WHERE tablename = 'keys')"
}
app_sees() {  # what the app role can do under RLS
  sql $DB -c "SET ROLE pgi_move_app" -c "BEGIN" -c "SELECT (SELECT outcome FROM idempotency.claim('app1', 'x'))::text || ' ' || (SELECT count(*) FROM idempotency.keys WHERE scope = 'ext')" -c "ROLLBACK"
}
edition() { sql $DB -c "SELECT CASE WHEN EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_idempotency') THEN 'extension' WHEN to_regproc('idempotency._portable_version') IS NOT NULL THEN 'portable' ELSE 'none' END"; }

make_keys $DB ext
check "extension: keys in every state" "$BEHAVIOUR" "$(behaviour $DB ext)"
digest=$(keys_digest $DB); acc=$(access)
check "extension: access as set up" "true true true false true app_only:ALL:(scope ~~ 'app%'::text):(scope ~~ 'app%'::text)" "$acc"

out=$("$PG_BIN/psql" -X -q -d $DB -f "$PORTABLE_ROOT/sql/portable/from_extension.sql" 2>&1); rc=$?
check "extension -> portable: from_extension.sql succeeds" "0:" "$rc:$out"
check "extension -> portable: the portable edition is installed" "portable" "$(edition)"
check "extension -> portable: every key, every column" "$digest" "$(keys_digest $DB)"
check "extension -> portable: clients see the same answers" "$BEHAVIOUR" "$(behaviour $DB ext)"
check "extension -> portable: grants and row-level security" "$acc" "$(access)"
check "extension -> portable: the app role claims under its policy" "claimed 0" "$(app_sees)"
make_keys $DB portable   # keys made by the portable edition move back too
check "portable: keys in every state" "$BEHAVIOUR" "$(behaviour $DB portable)"

# The extension's background sweeper (preloaded) may delete the expired keys
# as soon as the extension is back: compare the live ones.
LIVE="WHERE expires_at > now()"
digest=$(keys_digest $DB "$LIVE")
out=$("$PG_BIN/psql" -X -q -d $DB -f "$PORTABLE_ROOT/sql/portable/to_extension.sql" 2>&1); rc=$?
check "portable -> extension: to_extension.sql succeeds" "0:" "$rc:$out"
check "portable -> extension: the extension is installed" "extension" "$(edition)"
check "portable -> extension: every live key, every column" "$digest" "$(keys_digest $DB "$LIVE")"
check "portable -> extension: clients see the same answers (keys made by the extension)" "$BEHAVIOUR" "$(behaviour $DB ext)"
check "portable -> extension: clients see the same answers (keys made by the portable edition)" "$BEHAVIOUR" "$(behaviour $DB portable)"
check "portable -> extension: grants and row-level security" "$acc" "$(access)"
check "portable -> extension: the app role claims under its policy" "claimed 0" "$(app_sees)"
check "portable -> extension: the table is the extension's again (dumped as configuration)" "t" \
  "$(sql $DB -c "SELECT extconfig @> ARRAY['idempotency.keys'::regclass::oid] FROM pg_extension WHERE extname = 'pg_idempotency'")"

# Between servers (README): \copy from the extension into a fresh portable edition.
COPYDB=portable_migrate_copy
trap 'drop_db $DB; drop_db $COPYDB; sql postgres -c "DROP ROLE IF EXISTS pgi_move_app" >/dev/null 2>&1' EXIT
fresh_db $COPYDB
install_portable $COPYDB >/dev/null 2>&1
copyfile=$(mktemp /tmp/portable-keys.XXXXXX); chmod a+r "$copyfile"
"$PG_BIN/psql" -X -q -d $DB -c "\copy idempotency.keys TO '$copyfile'" &&
  "$PG_BIN/psql" -X -q -U "$OWNER" -d $COPYDB -c "\copy idempotency.keys FROM '$copyfile'"
rm -f "$copyfile"
check "\\copy from the extension to the portable edition: every live key" "$(keys_digest $DB "$LIVE")" "$(keys_digest $COPYDB "$LIVE")"
check "\\copy: clients see the same answers" "$BEHAVIOUR" "$(behaviour $COPYDB portable)"

# Nothing to move: both scripts refuse on the wrong edition and change nothing.
out=$("$PG_BIN/psql" -X -q -d $DB -f "$PORTABLE_ROOT/sql/portable/to_extension.sql" 2>&1); rc=$?
check "to_extension.sql on the extension: refused, nothing changed" "3 $digest" "$rc $(keys_digest $DB "$LIVE")"
[ $FAILURES -eq 0 ]
