# Shared by the portable edition's test scripts (test/portable/*.sh): checks
# that print "PASS: name" / "FAIL: name (why)", counted by the suite.
# Needs PG_BIN and a server in PGHOST/PGPORT/PGUSER (a superuser).
PORTABLE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PORTABLE_SQL=$PORTABLE_ROOT/sql/portable/pg_idempotency_portable.sql
PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin}
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
# recovery point, in_progress taken over once (attempt 2, leased), in_progress
# whose lease is over (a crashed holder, recovery point step-1),
# completed with a response, completed by once(), expired (not swept).
make_keys() {  # DB SCOPE
  sql "$1" <<SQL >/dev/null
SELECT token AS t FROM idempotency.claim('$2', 'leased', idempotency.fingerprint('{"a":1}'), lease => '1 hour') \gset
SELECT idempotency.checkpoint('$2', 'leased', :t, 'step-2', '1 hour');
SELECT token AS t FROM idempotency.claim('$2', 'taken-over', NULL, lease => '1 millisecond') \gset
SELECT idempotency.checkpoint('$2', 'taken-over', :t, 'halfway', '1 millisecond');
SELECT pg_sleep(0.01);
SELECT token AS t FROM idempotency.claim('$2', 'taken-over', NULL, lease => '1 hour') \gset
SELECT token AS t FROM idempotency.claim('$2', 'lapsed', NULL, lease => '1 millisecond') \gset
SELECT idempotency.checkpoint('$2', 'lapsed', :t, 'step-1', '1 millisecond');
SELECT token AS t FROM idempotency.claim('$2', 'done', idempotency.fingerprint('{"b":2}')) \gset
SELECT idempotency.finish('$2', 'done', :t, 201, '\x00ff7b7d'::bytea, '{"Content-Type": "application/json"}');
SELECT to_regproc('idempotency.once') IS NOT NULL AS has_once \gset
\if :has_once
SELECT idempotency.once('$2', 'consumed');
\else
-- (an extension older than 1.1: the row once() would make)
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at)
VALUES ('$2', 'consumed', 'completed', 77, 1, now(), now(), now() + interval '1 day');
\endif
SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'idempotency.keys'::regclass AND attname = 'trace_context') AS traced \gset
\if :traced
-- (1.2) a completed key that links to the trace of the request that did the work
SELECT token AS t FROM idempotency.claim('$2', 'traced', trace_context => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') \gset
SELECT idempotency.finish('$2', 'traced', :t, 200);
\endif
BEGIN;
SELECT token AS t FROM idempotency.claim('$2', 'expired', NULL, ttl => '1 millisecond') \gset
SELECT idempotency.finish('$2', 'expired', :t, 200, 'old');
COMMIT;
SQL
}

# keys_digest DB [WHERE]: every column of every row, as text, in key order
keys_digest() {
  sql "$1" -c "SELECT md5(string_agg(concat_ws('|', scope, key, fingerprint, state::text, token, attempt, recovery_point,
                 locked_until, created_at, completed_at, expires_at, response_status, response_headers, response_body,
                 to_jsonb(k) ->> 'trace_context'),
                 E'\n' ORDER BY scope, key)) FROM idempotency.keys AS k ${2:-}"
}

# behaviour DB SCOPE: what a client sees of make_keys' keys (then undone)
behaviour() {
  sql "$1" <<SQL
BEGIN;
SELECT 'done=' || outcome || ' ' || response_status || ' ' || encode(response_body, 'hex') || ' ' || (response_headers ->> 'Content-Type')
  FROM idempotency.claim('$2', 'done', idempotency.fingerprint('{"b":2}'));
SELECT 'mismatch=' || outcome FROM idempotency.claim('$2', 'done', idempotency.fingerprint('{"b":3}'));
SELECT 'leased=' || outcome || ' ' || attempt FROM idempotency.claim('$2', 'leased');
SELECT 'taken-over=' || outcome || ' ' || attempt FROM idempotency.claim('$2', 'taken-over');
SELECT 'lapsed=' || outcome || ' ' || attempt || ' ' || recovery_point FROM idempotency.claim('$2', 'lapsed');
SELECT to_regproc('idempotency.once') IS NOT NULL AS has_once \gset
\if :has_once
SELECT 'consumed=' || idempotency.once('$2', 'consumed');
\else
SELECT 'consumed=' || ((idempotency.lookup('$2', 'consumed')).state = 'completed' IS NOT TRUE);
\endif
SELECT 'expired=' || outcome || ' ' || attempt FROM idempotency.claim('$2', 'expired');
SELECT 'leased-token=' || (SELECT idempotency.checkpoint('$2', 'leased', token, NULL) > now() FROM idempotency.keys WHERE scope = '$2' AND key = 'leased');
ROLLBACK;
SQL
}
BEHAVIOUR='done=replay 201 00ff7b7d application/json
mismatch=mismatch
leased=in_progress 1
taken-over=in_progress 2
lapsed=claimed 2 step-1
consumed=false
expired=claimed 1
leased-token=true'
