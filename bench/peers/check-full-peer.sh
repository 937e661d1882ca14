#!/usr/bin/env bash
# Runs the extension's SQL tests (test/sql/*.sql) against the full-contract
# PL/pgSQL peer (bench/peers/full_plpgsql.sql), installed as schema
# `idempotency` in a scratch database where the extension is NOT installed.
#
# Every `CREATE EXTENSION ... pg_idempotency` line becomes `\i` of the peer
# (renamed peer_full -> idempotency), every `DROP EXTENSION ... pg_idempotency`
# a `DROP SCHEMA idempotency CASCADE`. Tests run in name order in one database,
# as pg_regress runs them, with `psql -X -a -q` as pg_regress does.
#
# Two comparisons per test:
#   raw   peer output vs test/expected/NAME.out (message texts differ by design);
#   state extension vs peer, both run with VERBOSITY sqlstate, so only
#         behaviour (results, outcomes, SQLSTATEs) is compared, not wording.
# Diffs go to bench/out/check-full-peer/. Exit status 0 always (a report).
#
# Usage: bench/peers/check-full-peer.sh            (own throwaway cluster; root)
#        PGHOST=... PGPORT=... bench/peers/check-full-peer.sh   (use a running one)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/bench/out/check-full-peer
rm -rf "$OUT"; mkdir -p "$OUT"

if [ -z "${PGHOST:-}" ]; then
  source "$ROOT/scripts/lib/common.sh"
  need_root
  export PATH=$PG_BIN:$PATH
  trap stop_cluster EXIT
  trap 'exit 130' INT TERM
  start_cluster
fi
export PGUSER=${PGUSER:-postgres}

shopt -s nullglob
TEST_DIR=${TEST_DIR:-$ROOT/test}
tests=("$TEST_DIR"/sql/*.sql)
if [ ${#tests[@]} -eq 0 ]; then
  echo "no test/sql/*.sql yet: nothing to check"
  exit 0
fi

# The peer, renamed to the extension's schema; readable by the postgres user.
PEER=$OUT/peer_as_idempotency.sql
sed -e '/^DROP SCHEMA IF EXISTS peer_full/d' -e 's/peer_full/idempotency/g' "$HERE/full_plpgsql.sql" >"$PEER"
chmod -R a+rX "$OUT"

# The CREATE EXTENSION line is echoed as it was (so outputs line up) while the
# peer is read with echo off. In ext mode the same wrapper runs the original.
rewrite() {  # mode file
  local mode=$1 file=$2
  python3 - "$mode" "$PEER" "$file" <<'PY'
import re, sys
mode, peer, path = sys.argv[1:]
create = re.compile(r'^\s*CREATE\s+EXTENSION\s+(IF\s+NOT\s+EXISTS\s+)?"?pg_idempotency"?[^;]*;', re.I)
drop = re.compile(r'^\s*DROP\s+EXTENSION\s+(IF\s+EXISTS\s+)?"?pg_idempotency"?[^;]*;', re.I)
alter = re.compile(r'^\s*ALTER\s+EXTENSION\s+"?pg_idempotency"?[^;]*;', re.I)
out = []
for line in open(path):
    line = line.rstrip('\n')
    m = create.match(line) or drop.match(line) or alter.match(line)
    if not m:
        out.append(line); continue
    stmt = m.group(0).strip()
    if mode == 'peer':
        if create.match(line):
            run = ('\\i ' + peer) if not m.group(1) else \
                  "SELECT NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'idempotency') AS need_peer \\gset\n\\if :need_peer\n\\i " + peer + \
                  "\n\\else\nDO $pk$BEGIN RAISE NOTICE 'extension \"pg_idempotency\" already exists, skipping' USING ERRCODE = '42710'; END$pk$;\n\\endif"
        elif drop.match(line):
            run = 'DROP SCHEMA ' + ('IF EXISTS ' if m.group(1) else '') + 'idempotency CASCADE;'
        else:
            run = '-- (peer skips) ' + stmt
    else:
        run = stmt
    out += ['\\set ECHO none', '\\echo ' + "'" + stmt.replace("'", "\\'") + "'", run, '\\set ECHO all']
    rest = line[len(m.group(0)):]
    if rest.strip():
        out.append(rest)
print('\n'.join(out))
PY
}
sqlstate_only() { sed -E -e 's/^\\set VERBOSITY .*/\\set VERBOSITY sqlstate/' "$1" | { echo '\set VERBOSITY sqlstate'; cat; }; }

run_suite() {  # db mode(ext|peer) verbosity(raw|state) outdir
  local db=$1 mode=$2 verb=$3 dir=$4 t name
  mkdir -p "$dir"
  psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  for t in "${tests[@]}"; do
    name=$(basename "$t" .sql)
    local src=$dir/$name.in
    rewrite "$mode" "$t" >"$src"
    if [ "$verb" = state ]; then sqlstate_only "$src" >"$src.2"; mv "$src.2" "$src"; fi
    timeout 300 psql -X -a -q -d "$db" <"$src" 2>&1 | grep -vx '\\set ECHO none' >"$dir/$name.out"
  done
  psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
}

run_suite peer_check_raw peer raw "$OUT/peer-raw"
have_ext=
if [ -f "$(pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/15)/extension/pg_idempotency.control" ] ||
   [ -f /usr/share/postgresql/15/extension/pg_idempotency.control ]; then
  have_ext=1
  run_suite peer_check_ext ext state "$OUT/ext-state"
  run_suite peer_check_peer peer state "$OUT/peer-state"
fi

# Behaviour only: message texts captured into result rows ("IK001: <text>")
# become their SQLSTATE, and column widths are ignored.
normalise() {
  python3 -c '
import re, sys
for line in sys.stdin:
    line = re.sub(r"\b([0-9A-Z]{5}): .*$", r"\1: <message>", line.rstrip("\n"))
    line = re.sub(r"\s+", " ", line).strip()
    if re.fullmatch(r"[-+]+", line):
        line = "---"
    print(line)'
}

printf '%-28s %12s %14s\n' test "raw diff" "behaviour diff"
same=0; differ=0
for t in "${tests[@]}"; do
  name=$(basename "$t" .sql)
  raw=n/a; beh=n/a
  if [ -f "$TEST_DIR/expected/$name.out" ]; then
    diff -u "$TEST_DIR/expected/$name.out" "$OUT/peer-raw/$name.out" >"$OUT/$name.raw.diff"
    raw=$(grep -c '^[-+][^-+]' "$OUT/$name.raw.diff")
  fi
  if [ -n "$have_ext" ]; then
    normalise <"$OUT/ext-state/$name.out" >"$OUT/ext-state/$name.norm"
    normalise <"$OUT/peer-state/$name.out" >"$OUT/peer-state/$name.norm"
    diff -u "$OUT/ext-state/$name.norm" "$OUT/peer-state/$name.norm" >"$OUT/$name.behaviour.diff"
    beh=$(grep -c '^[-+][^-+]' "$OUT/$name.behaviour.diff")
    if [ "$beh" -eq 0 ]; then same=$((same + 1)); else differ=$((differ + 1)); fi
  fi
  printf '%-28s %12s %14s\n' "$name" "$raw lines" "$beh lines"
done
echo "behaviour: $same tests identical to the extension, $differ differ (diffs in $OUT)"

# Isolation specs (test/specs): the peer pre-installed in an existing database,
# `CREATE EXTENSION` in the specs' setup replaced by a no-op, expected output
# as for the extension.
specs=("$TEST_DIR"/specs/*.spec)
ISO=$(dirname "$(pg_config --pgxs 2>/dev/null || echo /usr/lib/postgresql/15/lib/pgxs/src/makefiles/pgxs.mk)")/../test/isolation/pg_isolation_regress
if [ ${#specs[@]} -gt 0 ] && [ -x "$ISO" ]; then
  mkdir -p "$OUT/iso/specs" "$OUT/iso/expected" "$OUT/iso/out"
  names=()
  for sp in "${specs[@]}"; do
    n=$(basename "$sp" .spec); names+=("$n")
    sed -E 's/^[[:space:]]*CREATE[[:space:]]+EXTENSION[[:space:]]+(IF[[:space:]]+NOT[[:space:]]+EXISTS[[:space:]]+)?pg_idempotency[^;]*;/  DO $$BEGIN END$$;/I' "$sp" >"$OUT/iso/specs/$n.spec"
    [ -f "$TEST_DIR/expected/$n.out" ] && cp "$TEST_DIR/expected/$n.out" "$OUT/iso/expected/"
  done
  chmod -R a+rwX "$OUT/iso"
  psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS peer_check_iso" -c "CREATE DATABASE peer_check_iso" >/dev/null
  psql -X -q -d peer_check_iso -c "SET client_min_messages = warning" -f "$PEER" >/dev/null
  "$ISO" --use-existing --dbname=peer_check_iso --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" \
    --inputdir="$OUT/iso" --outputdir="$OUT/iso/out" "${names[@]}" >"$OUT/iso/summary.txt" 2>&1
  grep -E '^(ok|not ok|test|     )' "$OUT/iso/summary.txt" | sed 's/^/isolation: /'
  grep -E 'tests (passed|failed)|of [0-9]+ tests' "$OUT/iso/summary.txt" | sed 's/^/isolation: /'
  [ -s "$OUT/iso/out/regression.diffs" ] && echo "isolation diffs: $OUT/iso/out/regression.diffs"
  psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS peer_check_iso" >/dev/null 2>&1
fi
exit 0
