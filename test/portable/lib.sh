# Shared by the portable edition's test scripts (test/portable/*.sh): checks
# that print "PASS: name" / "FAIL: name (why)", counted by the suite.
# Needs PG_BIN and a server in PGHOST/PGPORT/PGUSER (a superuser).
PORTABLE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PORTABLE_SQL=$PORTABLE_ROOT/sql/portable/pg_idempotency_portable.sql
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
OWNER=${OWNER:-pgi_portable_owner}
FAILURES=0

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILURES=$((FAILURES + 1)); }
check() {  # name expected actual
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}

# sql DB [psql args...]: one value, errors to stderr
sql() { local db=$1; shift; "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

ensure_owner() {
  sql postgres -c "DO \$\$BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$OWNER') THEN CREATE ROLE $OWNER LOGIN; END IF;
    END\$\$" >/dev/null
}

# fresh_db NAME: an empty database where $OWNER may CREATE (nothing installed)
fresh_db() {
  ensure_owner
  sql postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" \
    -c "GRANT CREATE ON DATABASE $1 TO $OWNER" >/dev/null
}
drop_db() { sql postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; }

# install_portable DB [role]: psql -f as the (non-superuser) owner
install_portable() { "$PG_BIN/psql" -X -q -U "${2:-$OWNER}" -d "$1" -f "$PORTABLE_SQL"; }

# Keys in every state, committed: in_progress with a running lease and a
# recovery point, in_progress whose lease is over (taken over once: attempt 2),
# completed with a response, completed by once(), expired (not swept).
make_keys() {  # DB SCOPE
  sql "$1" <<SQL >/dev/null
SELECT token AS t FROM idempotency.claim('$2', 'leased', idempotency.fingerprint('{"a":1}'), lease => '1 hour') \gset
SELECT idempotency.checkpoint('$2', 'leased', :t, 'step-2', '1 hour');
SELECT token AS t FROM idempotency.claim('$2', 'taken-over', NULL, lease => '1 millisecond') \gset
SELECT idempotency.checkpoint('$2', 'taken-over', :t, 'halfway', '1 millisecond');
SELECT pg_sleep(0.01);
SELECT token AS t FROM idempotency.claim('$2', 'taken-over', NULL, lease => '1 hour') \gset
SELECT token AS t FROM idempotency.claim('$2', 'done', idempotency.fingerprint('{"b":2}')) \gset
SELECT idempotency.finish('$2', 'done', :t, 201, '\x00ff7b7d'::bytea, '{"Content-Type": "application/json"}');
SELECT idempotency.once('$2', 'consumed');
BEGIN;
SELECT token AS t FROM idempotency.claim('$2', 'expired', NULL, ttl => '1 millisecond') \gset
SELECT idempotency.finish('$2', 'expired', :t, 200, 'old');
COMMIT;
SQL
}

# keys_digest DB: every column of every row, as text, in key order
keys_digest() {
  sql "$1" -c "SELECT md5(string_agg(concat_ws('|', scope, key, fingerprint, state::text, token, attempt, recovery_point,
                 locked_until, created_at, completed_at, expires_at, response_status, response_headers, response_body),
                 E'\n' ORDER BY scope, key)) FROM idempotency.keys"
}
