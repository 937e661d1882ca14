#!/usr/bin/env bash
# 1.2 is a trusted extension (docs/security-review.md). On the shared
# cluster: a role with only CREATEDB creates a database, installs, uses,
# grants on, dumps and restores, updates (1.1 -> 1.2) and drops the
# extension; a plain role cannot install it; a hostile search_path and
# hostile objects at install time change nothing; and each claim of the
# review is checked on the installed objects.
source "$(dirname "$0")/../lib/common.sh"
set -u
OWNER=idem_trusted_owner PLAIN=idem_trusted_plain APP=idem_trusted_app
DB=idem_trusted DB11=idem_trusted_11 HOSTILE=idem_trusted_hostile RESTORED=idem_trusted_restored
work=$(mktemp -d)
passed=0 failed=0

as_super() { local db=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
as_owner() { local db=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -U $OWNER -d "$db" "$@"; }
dbs() { echo $DB $DB11 $HOSTILE $RESTORED; }
drop_all() {
  for db in $(dbs); do dropdb --if-exists "$db" >/dev/null 2>&1; done
  as_super postgres -c "DROP ROLE IF EXISTS $OWNER" -c "DROP ROLE IF EXISTS $PLAIN" -c "DROP ROLE IF EXISTS $APP" >/dev/null 2>&1
}
trap 'drop_all; rm -rf "$work"' EXIT
ok() { echo "ok   - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1" >&2; [ -n "${2:-}" ] && [ -f "$2" ] && head -c 4000 "$2" >&2; failed=$((failed + 1)); }
# check NAME EXPECTED ACTUAL-COMMAND...
check() {
  local name=$1 expected=$2; shift 2
  local actual; actual=$("$@" 2>&1 | tr '\n' ' ')
  if [ "$actual" = "$expected" ]; then ok "$name"; else not_ok "$name: expected '$expected', got '$actual'"; fi
}

drop_all
as_super postgres -c "SET client_min_messages = warning" \
  -c "CREATE ROLE $OWNER LOGIN CREATEDB" -c "CREATE ROLE $PLAIN LOGIN" -c "CREATE ROLE $APP LOGIN" >/dev/null

check "the control file says trusted, default version 1.2" "t 1.2 " \
  as_super postgres -AtF ' ' -c "SELECT trusted, (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_idempotency')
                          FROM pg_available_extension_versions WHERE name = 'pg_idempotency' AND version = '1.2'"

# 1. The CREATEDB role: its own database, CREATE EXTENSION, the whole API.
as_owner postgres -c "CREATE DATABASE $DB" >/dev/null
if as_owner $DB >"$work/use.out" 2>&1 <<'SQL'
CREATE EXTENSION pg_idempotency;
SELECT token AS t FROM idempotency.claim('trusted', 'pay', idempotency.fingerprint('{"a":1}'), NULL, NULL, '0',
                                         '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') \gset
SELECT idempotency.checkpoint('trusted', 'pay', :t, 'step') IS NOT NULL AS c \gset
SELECT idempotency.finish('trusted', 'pay', :t, 201, 'paid') AS f \gset
SELECT outcome = 'replay' AND trace_context LIKE '00-4bf9%' AS r FROM idempotency.claim('trusted', 'pay', idempotency.fingerprint('{"a":1}')) \gset
SELECT idempotency.once('trusted', 'msg') AND NOT idempotency.once('trusted', 'msg') AS o \gset
SELECT token AS t2 FROM idempotency.claim('trusted', 'gone') \gset
SELECT idempotency.release('trusted', 'gone', :t2) AS rel \gset
SELECT (idempotency.lookup('trusted', 'pay')).state = 'completed' AS l, idempotency.sweep() >= 0 AS s,
       (SELECT count(*) FROM idempotency.stats) = 1 AS st, (SELECT count(*) FROM idempotency.keys) = 2 AS k \gset
SELECT :'c' AND :'f' AND :'r' AND :'o' AND :'rel' AND :'l' AND :'s' AND :'st' AND :'k' AS all_ok \gset
\if :all_ok
\else
  SELECT 1/0;
\endif
SQL
then ok "a role with only CREATEDB installs 1.2 in its database and uses the whole API"
else not_ok "a role with only CREATEDB installs 1.2 in its database and uses the whole API" "$work/use.out"; fi

# 2. The review's claims, on what that install left.
check "every object the extension created lives in schema idempotency" "0 " \
  as_super $DB -Atc "SELECT count(*) FROM pg_depend d, pg_identify_object(d.classid, d.objid, 0) o
                      WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                        AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_idempotency')
                        AND o.schema IS DISTINCT FROM 'idempotency'"
check "no SECURITY DEFINER function, no function with its own search_path or settings" "0 " \
  as_super $DB -Atc "SELECT count(*) FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace AND (prosecdef OR proconfig IS NOT NULL)"
check "objects owned by the bootstrap superuser, the schema and the extension by the installing role" \
  "extension $OWNER schema $OWNER others-by-bootstrap t " \
  as_super $DB -AtF ' ' -c "SELECT 'extension', extowner::regrole FROM pg_extension WHERE extname = 'pg_idempotency';
                     SELECT 'schema', nspowner::regrole FROM pg_namespace WHERE nspname = 'idempotency';
                     SELECT 'others-by-bootstrap', bool_and(owner = 10) FROM (
                       SELECT proowner AS owner FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace
                       UNION ALL SELECT relowner FROM pg_class WHERE relnamespace = 'idempotency'::regnamespace
                       UNION ALL SELECT typowner FROM pg_type WHERE typnamespace = 'idempotency'::regnamespace) o"
# Every privilege on every object: the objects' owner, and the installing role
# exactly the contract's privileges with grant option; nobody else, not PUBLIC.
check "grants: the installing role gets the contract's privileges with grant option, nobody else anything" \
  "function $OWNER EXECUTE true schema - - - table keys $OWNER DELETE,INSERT,SELECT,UPDATE true table stats $OWNER SELECT true " \
  as_super $DB -AtF ' ' -c "
    WITH acl AS (
      SELECT 'function' AS what, p.proowner AS owner, p.proacl AS acl FROM pg_proc p
      WHERE p.pronamespace = 'idempotency'::regnamespace
      UNION ALL
      SELECT 'table ' || c.relname, c.relowner, c.relacl FROM pg_class c
      WHERE c.relnamespace = 'idempotency'::regnamespace AND c.relkind IN ('r', 'v')
      UNION ALL
      SELECT 'schema', n.nspowner, n.nspacl FROM pg_namespace n WHERE n.nspname = 'idempotency'
      UNION ALL
      SELECT 'type ' || t.typname, t.typowner, t.typacl FROM pg_type t
      WHERE t.typnamespace = 'idempotency'::regnamespace AND t.typacl IS NOT NULL)
    SELECT what, coalesce(string_agg(DISTINCT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END, ','), '-'),
           coalesce(string_agg(DISTINCT x.privilege_type, ',' ORDER BY x.privilege_type), '-'),
           coalesce(bool_and(x.is_grantable)::text, '-')
    FROM acl LEFT JOIN LATERAL aclexplode(acl.acl) x ON x.grantee <> acl.owner
    GROUP BY what ORDER BY what"
# Ten functions: the nine of the API and claim's planner support function (1.2).
check "every function grants EXECUTE to the installing role, with grant option" "t " \
  as_super $DB -Atc "SELECT bool_and(has_function_privilege('$OWNER', oid, 'EXECUTE WITH GRANT OPTION')) AND count(*) = 10
                      FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace"
check "PUBLIC and other roles get nothing implicitly" "f f f f " \
  as_super $DB -Atc "SELECT has_function_privilege('$APP', 'idempotency.claim(text, text, bytea, interval, interval, interval, text)', 'EXECUTE');
                     SELECT has_table_privilege('$APP', 'idempotency.keys', 'SELECT');
                     SELECT has_schema_privilege('$APP', 'idempotency', 'USAGE');
                     SELECT has_table_privilege('$APP', 'idempotency.stats', 'SELECT')"

# 3. The owner passes the privileges on to an application role (grant option).
as_owner $DB -c "GRANT USAGE ON SCHEMA idempotency TO $APP;
                 GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO $APP;
                 GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO $APP;
                 GRANT SELECT ON idempotency.stats TO $APP;" >"$work/grant.out" 2>&1
check "the owner grants the README's privileges to an application role, which uses them" "replay t " \
  psql -X -q -U $APP -d $DB -Atc "SELECT (idempotency.claim('trusted', 'pay')).outcome; SELECT idempotency.once('trusted', 'app-msg')"

# 4. pg_dump and pg_restore by that owner: the keys replay in the copy.
as_owner postgres -c "CREATE DATABASE $RESTORED" >/dev/null
if pg_dump -U $OWNER --format=custom --file="$work/owner.dump" $DB >"$work/dump.out" 2>&1 &&
   pg_restore -U $OWNER --exit-on-error --no-owner --dbname=$RESTORED "$work/owner.dump" >>"$work/dump.out" 2>&1; then
  check "after pg_dump and pg_restore by the owner, the keys replay with their trace context" \
    "replay 201 t f 1.2 " \
    as_owner $RESTORED -AtF ' ' -c "SELECT outcome, response_status, trace_context LIKE '00-4bf9%' FROM idempotency.claim('trusted', 'pay', idempotency.fingerprint('{\"a\":1}'));
                             SELECT idempotency.once('trusted', 'msg');
                             SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'"
else
  not_ok "pg_dump/pg_restore by the owner" "$work/dump.out"
fi

# 5. Drop by the owner: nothing of the extension is left.
check "the owner drops the extension and nothing is left" "0 " \
  as_owner $DB -Atc "DROP EXTENSION pg_idempotency; DROP SCHEMA idempotency;
                     SELECT count(*) FROM pg_namespace WHERE nspname = 'idempotency'"

# 6. 1.0/1.1 installed by the owner (the control file's trusted covers every
#    version): their objects grant the owner nothing, so they are of no use
#    until the update to 1.2 grants them; the update and the drop work.
as_owner postgres -c "CREATE DATABASE $DB11" >/dev/null
as_owner $DB11 -c "CREATE EXTENSION pg_idempotency VERSION '1.1'" >"$work/11.out" 2>&1
check "1.1 installed by the owner refuses the owner's calls (42501) until updated" "42501 " \
  bash -c "psql -X -q -U $OWNER -d $DB11 -Atc \"\\set VERBOSITY sqlstate\" -c \"SELECT idempotency.claim('t', 'k')\" 2>&1 | grep -o 42501"
check "the owner updates 1.1 to 1.2 and then uses it; its 1.1 key data kept" "1.2 claimed t replay " \
  as_owner $DB11 -Atc "ALTER EXTENSION pg_idempotency UPDATE;
                       SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency';
                       SELECT (idempotency.claim('t', 'k')).outcome;
                       SELECT idempotency.finish('t', 'k', (SELECT token FROM idempotency.keys), 200);
                       SELECT (idempotency.claim('t', 'k')).outcome" 
check "the updated database's privileges equal a fresh trusted install's" "t " \
  as_super $DB11 -Atc "SELECT bool_and(has_function_privilege('$OWNER', oid, 'EXECUTE WITH GRANT OPTION')) AND count(*) = 10
                       AND has_table_privilege('$OWNER', 'idempotency.keys', 'SELECT, INSERT, UPDATE, DELETE WITH GRANT OPTION')
                       FROM pg_proc WHERE pronamespace = 'idempotency'::regnamespace"
check "the owner drops the updated extension" "" as_owner $DB11 -Atc "DROP EXTENSION pg_idempotency"

# 7. A plain role (no CREATEDB, not the database's owner, no CREATE on it) cannot install.
check "a plain role cannot install the extension (42501)" "42501 " \
  bash -c "dropdb --if-exists $HOSTILE 2>/dev/null; createdb $HOSTILE; psql -X -q -U $PLAIN -d $HOSTILE -c '\\set VERBOSITY sqlstate' -c 'CREATE EXTENSION pg_idempotency' 2>&1 | grep -o 42501"
dropdb --if-exists $HOSTILE

# 8. A hostile search_path and hostile objects at install time: functions and
#    operators in public and pg_temp shadowing what an unqualified script
#    would call (=, ||, <>, format, quote_ident, pg_extension_config_dump,
#    now), a public.keys table; each would leave a row in public.called.
#    The install by the owner succeeds, none of them runs, and the objects
#    are the same as a clean install's.
as_owner postgres -c "CREATE DATABASE $HOSTILE" >/dev/null
if as_owner $HOSTILE >"$work/hostile.out" 2>&1 <<'SQL'
CREATE TABLE public.called (what text);
GRANT INSERT ON public.called TO PUBLIC;
CREATE FUNCTION public.trap(text, text) RETURNS boolean LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('op'); SELECT true $$;
CREATE FUNCTION public.trap_name(name, text) RETURNS boolean LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('name op'); SELECT true $$;
CREATE FUNCTION public.trap_oid(oid, oid) RETURNS boolean LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('oid op'); SELECT true $$;
CREATE FUNCTION public.trap_cat(text, text) RETURNS text LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('||'); SELECT 'x' $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trap);
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.trap_name);
CREATE OPERATOR public.<> (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.trap_oid);
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trap_cat);
CREATE FUNCTION public.format(text, VARIADIC text[]) RETURNS text LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('format'); SELECT 'SELECT 1' $$;
CREATE FUNCTION public.quote_ident(text) RETURNS text LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('quote_ident'); SELECT 'public' $$;
CREATE FUNCTION public.pg_extension_config_dump(regclass, text) RETURNS void LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('config_dump') $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('now'); SELECT now() $$;
CREATE TABLE public.keys (scope text, key text);
CREATE FUNCTION pg_temp.quote_ident(text) RETURNS text LANGUAGE sql AS $$ INSERT INTO public.called VALUES ('temp quote_ident'); SELECT 'public' $$;
SET search_path = public, pg_temp, pg_catalog;
CREATE EXTENSION pg_idempotency;
RESET search_path;
SELECT count(*) AS calls FROM public.called \gset
\if :calls
  SELECT what FROM public.called;
  SELECT 1/0;
\endif
SQL
then ok "a hostile search_path and shadowing functions and operators at install time: installed, none called"
else not_ok "a hostile search_path and shadowing functions and operators at install time" "$work/hostile.out"; fi
# The same catalog footprint as the clean install in $DB11 (updated, then
# dropped: re-install there clean for the comparison).
as_owner $DB11 -c "CREATE EXTENSION pg_idempotency" >/dev/null 2>&1
psql -X -q -d $HOSTILE -f "$REPO_ROOT/test/upgrade/catalog.sql" >"$work/hostile.catalog" 2>&1
psql -X -q -d $DB11 -f "$REPO_ROOT/test/upgrade/catalog.sql" >"$work/clean.catalog" 2>&1
if grep -q '^function | idempotency.claim' "$work/clean.catalog" && diff -u "$work/hostile.catalog" "$work/clean.catalog" >"$work/catalog.diff"; then
  ok "installed under the hostile search_path: the same objects, ACLs and initial privileges as a clean install"
else
  not_ok "installed under the hostile search_path: the same objects as a clean install" "$work/catalog.diff"
fi
# A schema idempotency made beforehand that already holds objects is refused.
check "a schema idempotency that already holds an object is refused (42P06), nothing installed" "42P06 0 " \
  bash -c "psql -X -q -U $OWNER -d $HOSTILE -c 'DROP EXTENSION pg_idempotency' -c 'CREATE TABLE idempotency.keys_trap (x int)' >/dev/null 2>&1;
           psql -X -q -U $OWNER -d $HOSTILE -c '\\set VERBOSITY sqlstate' -c 'CREATE EXTENSION pg_idempotency' 2>&1 | grep -o 42P06;
           psql -X -q -U $OWNER -d $HOSTILE -Atc \"SELECT count(*) FROM pg_extension WHERE extname = 'pg_idempotency'\""

echo "$passed $failed trusted" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
