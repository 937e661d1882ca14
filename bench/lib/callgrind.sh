#!/usr/bin/env bash
# bench/lib/callgrind.sh OUTDIR: noise-free counts per operation, server side.
#
# Runs each operation N1 and N2 times in a DO loop inside a single-user backend
# under valgrind --tool=callgrind, on a throwaway cluster of its own (the
# extension and the peers installed, 1000 completed keys). The difference
# between the two runs divided by N2 - N1 is the cost of one operation, with
# the loop's own cost included once per iteration (identical for ours and the
# baseline). Prints, per operation: instructions, executor starts
# (standard_ExecutorStart calls), SPI statements (SPI_execute_plan calls, what
# the extension runs) and SPI connections (SPI_connect calls), and appends
# "cg:<measure>\t<op>\t1\t<value>" lines to OUTDIR/runs.tsv.
# Needs: valgrind, PG_BIN (scripts/lib/common.sh), run as root.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/lib/common.sh"
OUT=${1:?OUTDIR}
N1=${CALLGRIND_N1:-200}
N2=${CALLGRIND_N2:-1200}
command -v valgrind >/dev/null || { echo "callgrind: valgrind missing, skipped" >&2; exit 0; }

WORK=$(mktemp -d /tmp/pgi-callgrind.XXXXXX)
chown postgres:postgres "$WORK"
DATA=$WORK/data
cleanup() {
  [ -f "$DATA/postmaster.pid" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1
  [ -n "${CALLGRIND_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
runuser -u postgres -- "$PG_BIN/initdb" -D "$DATA" -A trust -U postgres --no-sync >/dev/null
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = 5499
fsync = off
idempotency.sweeper = off
CONF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 60 start >/dev/null
psql_() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p 5499 -U postgres postgres "$@"; }
FP="'\\x$(printf '%s' '{"amount":100,"currency":"EUR"}' | sha256sum | cut -c1-64)'::bytea"
BODY="convert_to('{\"id\":12345,\"amount\":100,\"currency\":\"EUR\",\"status\":\"succeeded\"}', 'UTF8')"
HDR="'{\"content-type\": \"application/json\"}'::jsonb"
psql_ -c "CREATE EXTENSION pg_idempotency" >/dev/null
for f in bare simple_plpgsql; do psql_ -f "$HERE/../peers/$f.sql" >/dev/null 2>&1; done
psql_ -c "SELECT idempotency.finish('replay', i::text, (idempotency.claim('replay', i::text, $FP)).token, 200, $BODY, $HDR)
            FROM generate_series(1, 1000) i" >/dev/null
psql_ -c "VACUUM ANALYZE" >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null

# op name -> the body of one loop iteration (i is the iteration number; every
# new-key operation commits, as an application's transaction would).
declare -A OPS=(
  [replay_ours]="PERFORM * FROM idempotency.claim('replay', (i % 1000 + 1)::text, $FP);"
  [replay_pk]="PERFORM * FROM idempotency.keys WHERE scope = 'replay' AND key = (i % 1000 + 1)::text;"
  [new_ours]="PERFORM idempotency.finish('new', r || i, (idempotency.claim('new', r || i, $FP)).token, 201, $BODY, $HDR); COMMIT;"
  [new_bare]="INSERT INTO bare.keys (scope, key, fingerprint, state, token, attempt, locked_until, created_at, expires_at)
                VALUES ('new', r || i, $FP, 'in_progress', i, 1, now() + interval '60 seconds', now(), now() + interval '24 hours')
                ON CONFLICT DO NOTHING;
              UPDATE bare.keys SET state = 'completed', response_status = 201, response_body = $BODY, response_headers = $HDR,
                     completed_at = now(), locked_until = NULL WHERE scope = 'new' AND key = r || i; COMMIT;"
  [once_ours]="PERFORM idempotency.once('once', r || i); COMMIT;"
  [once_bare]="INSERT INTO bare.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at)
                VALUES ('once', r || i, 'completed', i, 1, now(), now(), now() + interval '24 hours')
                ON CONFLICT DO NOTHING; COMMIT;"
  [new_simple]="PERFORM peer_simple.finish('new', r || i, (peer_simple.claim('new', r || i, $FP)).token, 201, $BODY, $HDR); COMMIT;"
)
ORDER=(${CALLGRIND_OPS:-replay_ours replay_pk new_ours new_bare new_simple once_ours once_bare})

# counts FILE: "instructions executor_starts spi_statements spi_connects" of a callgrind output
counts() {
  python3 - "$1" <<'PY'
import re, sys
names, calls, total = {}, {}, 0
want = {"standard_ExecutorStart": 0, "SPI_execute_plan": 0, "SPI_connect": 0}
cfn = None
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
    m = re.match(r"cfn=(?:\((\d+)\))?\s*(.*)", line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        cfn = names.get(m.group(1)) if m.group(1) else m.group(2).strip()
        continue
    if line.startswith("calls=") and cfn in want:
        want[cfn] += int(line[6:].split()[0])
        cfn = None
print(total, want["standard_ExecutorStart"], want["SPI_execute_plan"], want["SPI_connect"])
PY
}

run() {  # OP N -> callgrind output file
  local op=$1 n=$2 f=$WORK/cg.$1.$2
  # single-user mode ends a command at a newline: one line
  { printf '%s' "DO \$\$DECLARE r text := md5(random()::text) || ':'; BEGIN FOR i IN 1..$n LOOP ${OPS[$op]} END LOOP; END\$\$;" |
      tr -s '\n' ' '; echo; } |
    runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$f" --compress-strings=no --compress-pos=no \
      "$PG_BIN/postgres" --single -D "$DATA" -c shared_preload_libraries= postgres >"$WORK/single.$op.$n.log" 2>&1
  echo "$f"
}

printf '%-12s %12s %16s %15s %13s\n' operation "instr/op" "executor starts" "SPI statements" "SPI connects"
for op in "${ORDER[@]}"; do
  read -r i1 e1 s1 c1 < <(counts "$(run "$op" "$N1")")
  read -r i2 e2 s2 c2 < <(counts "$(run "$op" "$N2")")
  d=$((N2 - N1))
  python3 - "$op" "$OUT/runs.tsv" $d $i1 $i2 $e1 $e2 $s1 $s2 $c1 $c2 <<'PY'
import sys
op, runs, d = sys.argv[1], sys.argv[2], int(sys.argv[3])
i1, i2, e1, e2, s1, s2, c1, c2 = map(int, sys.argv[4:])
vals = {"instr": (i2 - i1) / d, "executor_starts": (e2 - e1) / d, "spi_statements": (s2 - s1) / d,
        "spi_connects": (c2 - c1) / d}
print(f"{op:<12} {vals['instr'] / 1000:10.1f}k {vals['executor_starts']:16.2f} {vals['spi_statements']:15.2f} {vals['spi_connects']:13.2f}")
with open(runs, "a") as f:
    for k, v in vals.items():
        f.write(f"cg:{k}\t{op}\t1\t{v:.2f}\n")
PY
done
