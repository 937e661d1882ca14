#!/usr/bin/env bash
# bench/lib/callgrind_wire.sh OUTDIR: server-side instructions per transaction
# of pgbench scripts, over the wire, counted by callgrind.
#
# The noise-free form of workload 2's tps rows: the server runs under
# valgrind --tool=callgrind (every backend it forks is counted in a file of
# its own), and pgbench (-M prepared, one client) runs each replay script
# N1 and N2 times on a connection of its own; the difference of the two
# backends' counts / (N2 - N1) is one transaction as an application sends it:
# protocol, planning cache, executor, output functions and commit (not the
# kernel's socket work, which is the same for all). Appends
# "cgw:instr\t<script>\t1\t<value>" to OUTDIR/runs.tsv and prints a table.
# Needs: valgrind, PG_BIN (scripts/lib/common.sh), the extension installed, root.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/lib/common.sh"
OUT=${1:?OUTDIR}
N1=${CALLGRIND_WIRE_N1:-100}
N2=${CALLGRIND_WIRE_N2:-600}
SCRIPTS=(${CALLGRIND_WIRE_SCRIPTS:-replay_ours replay_pk replay_scalar replay_client})
command -v valgrind >/dev/null || { echo "callgrind (wire): valgrind missing, skipped" >&2; exit 0; }

WORK=$(mktemp -d /tmp/pgi-callgrind-wire.XXXXXX)
chown postgres:postgres "$WORK"
DATA=$WORK/data
PORT=$(free_port)
stop() { [ -f "$DATA/postmaster.pid" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 120 stop >/dev/null 2>&1; }
cleanup() { stop; [ -n "${CALLGRIND_KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
runuser -u postgres -- "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres --no-sync >/dev/null
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
fsync = off
autovacuum = off
idempotency.sweeper = off
shared_preload_libraries = 'pg_idempotency'
CONF
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres postgres "$@"; }
FP="'\\x$(printf '%s' '{"amount":100,"currency":"EUR"}' | sha256sum | cut -c1-64)'::bytea"
BODY="convert_to('{\"id\":12345,\"amount\":100,\"currency\":\"EUR\",\"status\":\"succeeded\"}', 'UTF8')"
HDR="'{\"content-type\": \"application/json\"}'::jsonb"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 60 start >/dev/null
psql_ -c "CREATE EXTENSION pg_idempotency" >/dev/null
psql_ -c "SELECT count(idempotency.finish('replay', i::text, (idempotency.claim('replay', i::text, $FP)).token, 200, $BODY, $HDR))
            FROM generate_series(1, 1000) i" >/dev/null
psql_ -c "VACUUM ANALYZE" >/dev/null
stop

mkdir -m 777 "$WORK/cg"
runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$WORK/cg/cg.%p" \
  "$PG_BIN/postgres" -D "$DATA" >"$WORK/valgrind.log" 2>&1 &
for _ in $(seq 1 120); do psql_ -c "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
sleep 2

total() { grep -m1 -E '^(summary|totals):' "$1" | awk '{print $2}'; }
# run SCRIPT N: the instructions of the backend that served N transactions
run() {
  local before f
  before=$(ls "$WORK/cg")
  "$PG_BIN/pgbench" -n -M prepared -c 1 -t "$2" -D nreplay=1000 -D ttl=1d -D lease=30s -D wait=0 \
    -h "$WORK" -p "$PORT" -U postgres -f "$HERE/../workloads/$1.sql" postgres >"$WORK/pgbench.$1.$2.txt" 2>&1 || return 1
  # Each backend writes its file when it exits, after pgbench's connections
  # close (pgbench may open more than one): wait until every new file is
  # complete and no new one came for 3 s, then take the largest.
  local stable=0 prev=
  for _ in $(seq 1 120); do
    f=$(comm -13 <(echo "$before") <(ls "$WORK/cg") | while read -r x; do echo "$(total "$WORK/cg/$x") $x"; done)
    if [ -n "$f" ] && ! echo "$f" | grep -q '^ ' && [ "$f" = "$prev" ]; then
      stable=$((stable + 1)); [ $stable -ge 3 ] && break
    else
      stable=0
    fi
    prev=$f; sleep 1
  done
  f=$(echo "$f" | sort -n | tail -1 | awk '{print $2}')
  [ -n "$f" ] && total "$WORK/cg/$f" && mv "$WORK/cg/$f" "$WORK/cg.$1.$2"
}

printf '%-14s %12s\n' script "instr/txn"
for s in "${SCRIPTS[@]}"; do
  # A first backend rebuilds the relcache init file and fills shared caches:
  # one warm-up run, so that N1's and N2's backends start alike.
  run "$s" 10 >/dev/null
  i1=$(run "$s" "$N1") && i2=$(run "$s" "$N2") || { echo "$s: failed (see $WORK)" >&2; continue; }
  python3 - "$s" "$OUT/runs.tsv" $((N2 - N1)) "$i1" "$i2" <<'PY'
import sys
s, runs, d, i1, i2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
v = (i2 - i1) / d
print(f"{s:<14} {v / 1000:10.1f}k")
with open(runs, "a") as f:
    f.write(f"cgw:instr\t{s}\t1\t{v:.0f}\n")
PY
done
