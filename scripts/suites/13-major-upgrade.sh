#!/usr/bin/env bash
# Moving to a new major by dump and restore: a database on the host's 15
# (the cluster scripts/test started) holding keys in every state is dumped
# with pg_dump and restored, with the target's pg_restore, on each chroot major
# of this run (PGI_UPGRADE_TARGETS, set by scripts/test: 17 and 18), on a
# server there with the library preloaded, listening on 127.0.0.1. Then, from
# the host over TCP:
#   - the restored keys equal the dumped ones;
#   - every completed key replays its stored response, and another
#     fingerprint gets mismatch;
#   - an in_progress key whose lease runs still answers in_progress; one whose
#     short lease ended is taken over (attempt 2, its recovery point kept), the
#     old holder's token is refused, the new one finishes;
#   - the sweeper, switched on by SIGHUP, finds the restored database and
#     sweeps its expired keys, and only them.
# Runs only on the host.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/chroot.sh"
set -u
[ -n "${PGI_CHROOT:-}" ] && exit 0
if [ -z "${PGI_UPGRADE_TARGETS:-}" ]; then
  log "major-upgrade: no other major in this run (scripts/test --pg 15 --pg 17 major-upgrade): skipped"
  exit 0
fi
DB=idem_major_upgrade
work=$(mktemp -d /tmp/pgi_major_upgrade.XXXXXX)
chmod 755 "$work"
passed=0 failed=0
ok() { echo "ok   - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1" >&2; failed=$((failed + 1)); }
# check NAME EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: expected '$2', got '$3'"; fi; }
src() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

TARGET_ROOT= TARGET_MAJOR=
stop_target() {
  [ -n "$TARGET_ROOT" ] || return 0
  chroot_exec "$TARGET_ROOT" runuser -u postgres -- /usr/lib/postgresql/$TARGET_MAJOR/bin/pg_ctl \
    -D /tmp/pgi_major_upgrade/data -m immediate -w stop >/dev/null 2>&1
  rm -rf "$TARGET_ROOT/tmp/pgi_major_upgrade"
  TARGET_ROOT=
}
cleanup() { stop_target; dropdb --if-exists "$DB" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT

# ---- the source: keys in every state on 15 -----------------------------------
dropdb --if-exists "$DB" >/dev/null 2>&1
createdb "$DB" || { echo "0 1 major-upgrade" >>"$SUITE_COUNTS"; exit 1; }
if ! src >"$work/source.out" 2>&1 <<'SQL'
CREATE EXTENSION pg_idempotency;
-- completed with a response: binary bodies, headers, with and without a fingerprint
DO $$
DECLARE c idempotency.claim_result;
BEGIN
  FOR i IN 1..20 LOOP
    c := idempotency.claim('mv', 'done-' || i,
                           CASE WHEN i % 2 = 0 THEN idempotency.fingerprint(jsonb_build_object('n', i)) END);
    PERFORM idempotency.finish('mv', 'done-' || i, c.token, 200 + i, decode(repeat(lpad(to_hex(i), 2, '0'), i) || '00ff', 'hex'),
                               jsonb_build_object('Location', '/payments/' || i));
  END LOOP;
END $$;
SELECT idempotency.once('mv', 'consumed');
-- in_progress, committed: a lease that runs for an hour, and a short one with a recovery point
SELECT (idempotency.claim('mv', 'held', NULL, NULL, '1 hour')).outcome;
SELECT idempotency.checkpoint('mv', 'crashed', (idempotency.claim('mv', 'crashed', NULL, NULL, '1 hour')).token,
                              'step-2', '1 millisecond') IS NOT NULL AS checkpointed;
SQL
then
  not_ok "keys in every state on the source"; cat "$work/source.out" >&2
fi
rows="SELECT scope, key, state, encode(fingerprint, 'hex'), token, attempt, recovery_point, locked_until,
             created_at, completed_at, expires_at, response_status, response_headers, encode(response_body, 'hex')
      FROM idempotency.keys ORDER BY scope COLLATE \"C\", key COLLATE \"C\""
replays="SELECT scope, key, 'replay', response_status, response_headers, encode(response_body, 'hex')
         FROM idempotency.keys WHERE state = 'completed' AND expires_at > now() + interval '1 hour'
         ORDER BY scope COLLATE \"C\", key COLLATE \"C\""
src -c "SET TimeZone = 'UTC'" -c "$rows" >"$work/source.rows"
src -c "$replays" >"$work/source.replays"
held_token=$(src -c "SELECT token FROM idempotency.keys WHERE key = 'held'")
crashed_token=$(src -c "SELECT token FROM idempotency.keys WHERE key = 'crashed'")
version=$(src -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'")
check "the source holds 20 completed + 1 consumed + 2 in_progress keys" 23 "$(wc -l <"$work/source.rows")"
pg_dump --format=custom --file="$work/dump" "$DB" >"$work/dump.out" 2>&1 || { not_ok "pg_dump"; cat "$work/dump.out" >&2; }

# ---- each target ---------------------------------------------------------------
for major in $PGI_UPGRADE_TARGETS; do
  log "major-upgrade: PostgreSQL $PG_MAJOR -> $major"
  if ! chroot_prepare "$major"; then
    not_ok "$major: the $(chroot_suite "$major") chroot with the extension built and installed"; continue
  fi
  TARGET_ROOT=$(chroot_root "$major") TARGET_MAJOR=$major
  port=$(free_port)
  rm -rf "$TARGET_ROOT/tmp/pgi_major_upgrade"; mkdir -p "$TARGET_ROOT/tmp/pgi_major_upgrade"
  cp "$work/dump" "$TARGET_ROOT/tmp/pgi_major_upgrade/dump"
  # The sweeper starts off, so that the restored rows can be compared first.
  cat >"$TARGET_ROOT/tmp/pgi_major_upgrade/extra.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '/tmp/pgi_major_upgrade'
shared_preload_libraries = 'pg_idempotency'
idempotency.sweeper = off
idempotency.sweep_interval = '100ms'
fsync = off
CONF
  cat >"$TARGET_ROOT/tmp/pgi_major_upgrade/start.sh" <<SH
set -e
bin=/usr/lib/postgresql/$major/bin dir=/tmp/pgi_major_upgrade
chown -R postgres:postgres \$dir
runuser -u postgres -- \$bin/initdb -D \$dir/data -A trust -U postgres --no-sync >/dev/null
cat \$dir/extra.conf >>\$dir/data/postgresql.conf
runuser -u postgres -- \$bin/pg_ctl -D \$dir/data -l \$dir/server.log -w -t 60 start >/dev/null
runuser -u postgres -- \$bin/createdb -h \$dir -p $port $DB
runuser -u postgres -- \$bin/pg_restore -h \$dir -p $port --exit-on-error -d $DB \$dir/dump
SH
  if ! chroot_exec "$TARGET_ROOT" bash /tmp/pgi_major_upgrade/start.sh >"$work/target.out" 2>&1; then
    not_ok "$major: a server with the library preloaded, and pg_restore of the 15 dump"
    cat "$work/target.out" "$TARGET_ROOT/tmp/pgi_major_upgrade/server.log" >&2 2>/dev/null
    stop_target; continue
  fi
  dst() { psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$DB" "$@"; }
  check "$major: the server answers from the chroot over TCP" "$major" "$(dst -c "SELECT current_setting('server_version_num')::int / 10000")"
  check "$major: the extension is at the dumped version" "$version" "$(dst -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_idempotency'")"
  dst -c "SET TimeZone = 'UTC'" -c "$rows" >"$work/target.rows" 2>&1
  if diff -u --label "15" --label "$major" "$work/source.rows" "$work/target.rows" >"$work/diff"; then
    ok "$major: the restored keys equal the dumped ones (23 rows, every column)"
  else
    not_ok "$major: the restored keys differ"; head -c 10000 "$work/diff" >&2
  fi

  # Completed keys replay, with the fingerprint each was stored with.
  dst -c "SELECT k.scope, k.key, c.outcome, c.response_status, c.response_headers, encode(c.response_body, 'hex')
          FROM (SELECT scope, key, fingerprint FROM idempotency.keys
                WHERE state = 'completed' AND expires_at > now() + interval '1 hour') k
          CROSS JOIN LATERAL idempotency.claim(k.scope, k.key, k.fingerprint) c
          ORDER BY k.scope COLLATE \"C\", k.key COLLATE \"C\"" >"$work/target.replays" 2>&1
  if [ "$(wc -l <"$work/source.replays")" -eq 21 ] && diff -u "$work/source.replays" "$work/target.replays" >"$work/diff"; then
    ok "$major: all 21 completed keys replay their stored responses"
  else
    not_ok "$major: completed keys replay"; head -c 10000 "$work/diff" >&2
  fi
  check "$major: another fingerprint gets mismatch" mismatch \
    "$(dst -c "SELECT outcome FROM idempotency.claim('mv', 'done-2', idempotency.fingerprint('{\"n\": 3}'))")"
  check "$major: once() of the consumed key answers false" f "$(dst -c "SELECT idempotency.once('mv', 'consumed')")"

  # In-progress keys: the running lease holds, the ended one is taken over.
  check "$major: a key whose lease runs answers in_progress" "in_progress" \
    "$(dst -c "SELECT outcome FROM idempotency.claim('mv', 'held')")"
  check "$major: its holder's token still finishes it" t \
    "$(dst -c "SELECT idempotency.finish('mv', 'held', $held_token, 200)")"
  dst -c "DO \$\$BEGIN
            FOR i IN 1..300 LOOP
              EXIT WHEN (SELECT locked_until < now() FROM idempotency.keys WHERE key = 'crashed');
              PERFORM pg_sleep(0.1);
            END LOOP; END\$\$" >/dev/null
  read -r outcome attempt point token < <(dst -F ' ' -c "SELECT outcome, attempt, recovery_point, token FROM idempotency.claim('mv', 'crashed')")
  check "$major: a key whose lease ended is taken over (attempt 2, recovery point kept)" "claimed 2 step-2" "$outcome $attempt $point"
  if [ -n "${token:-}" ] && [ "$token" != "$crashed_token" ]; then ok "$major: the takeover has a new token"; else not_ok "$major: the takeover has a new token"; fi
  check "$major: the crashed holder's token is refused (IK001)" IK001 \
    "$(dst -c "\\set VERBOSITY sqlstate" -c "SELECT idempotency.finish('mv', 'crashed', $crashed_token, 200)" 2>&1 | sed -E 's/^ERROR: +//')"
  check "$major: the new holder finishes and it replays" "t replay" \
    "$(dst -c "SELECT idempotency.finish('mv', 'crashed', ${token:-0}, 201)") $(dst -c "SELECT outcome FROM idempotency.claim('mv', 'crashed')")"

  # The sweeper, switched on by SIGHUP, finds the restored database and sweeps
  # its expired keys, and nothing else. (Expired keys are added here: on the
  # source the sweeper may find the new database and sweep them before the dump.)
  dst -c "INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, response_status)
          SELECT 'mv', 'expired-' || i, 'completed', i, 1, now() - interval '2 days', now() - interval '2 days',
                 now() - interval '1 day', 200
          FROM generate_series(1, 5) i" >/dev/null
  check "$major: 5 expired keys wait while the sweeper is off" 5 \
    "$(dst -c "SELECT count(*) FROM idempotency.keys WHERE key LIKE 'expired-%'")"
  dst -c "ALTER SYSTEM SET idempotency.sweeper = on" -c "SELECT pg_reload_conf()" >/dev/null
  left=$(dst -c "DO \$\$BEGIN
                   FOR i IN 1..600 LOOP
                     EXIT WHEN NOT EXISTS (SELECT FROM idempotency.keys WHERE key LIKE 'expired-%');
                     PERFORM pg_sleep(0.1);
                   END LOOP; END\$\$" -c "SELECT count(*) FROM idempotency.keys WHERE key LIKE 'expired-%'")
  check "$major: the background sweeper swept the expired keys" 0 "$left"
  check "$major: and nothing else (23 keys left; stats count 5 swept)" "23 5" \
    "$(dst -F ' ' -c "SELECT (SELECT count(*) FROM idempotency.keys), swept FROM idempotency.stats")"
  stop_target
done

echo "$passed $failed major-upgrade" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
