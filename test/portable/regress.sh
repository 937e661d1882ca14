#!/usr/bin/env bash
# The extension's own pg_regress tests (test/sql) and isolation specs
# (test/specs) against the portable edition, in databases without the
# extension, where a non-superuser installed sql/portable/pg_idempotency_portable.sql.
#
# Expected output is test/expected/NAME.out, with test/portable/expected/NAME.diff
# applied, or replaced by test/portable/expected/NAME.out, where the portable
# edition differs by design (each one explained in test/portable/differences.md). Harness rewrites: test/portable/psql_as_portable.py.
#
# Needs a running server: PGHOST, PGPORT, PGUSER (a superuser, as for
# `make installcheck`) and PG_BIN. Prints pg_regress's lines and, last,
# "portable: N passed, M failed"; exits non-zero on a failure.
# OUT (default: a temp dir) keeps results and regression.diffs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin}
PGXS_DIR=$(dirname "$("$PG_BIN/pg_config" --pgxs)")/..
KEEP_OUT=${OUT:-}
OUT=${OUT:-$(mktemp -d /tmp/portable-regress.XXXXXX)}
OWNER=pgi_portable_owner   # installs the edition: LOGIN, CREATE on the database, nothing else
rm -rf "$OUT"; mkdir -p "$OUT/test/sql" "$OUT/test/expected" "$OUT/test/results" "$OUT/test/specs" "$OUT/bin" "$OUT/state"
chmod -R a+rwX "$OUT"   # the server (another OS user) never writes here, but pg_dump output does

q() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }

# The role that installs the edition: no superuser, no CREATEDB, no CREATEROLE.
q -c "DO \$\$BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$OWNER') THEN CREATE ROLE $OWNER LOGIN; END IF;
      END\$\$" >/dev/null

# db NAME: a fresh database as pg_regress makes one, the edition installed by $OWNER.
fresh_db() {
  q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1 TEMPLATE template0" \
    -c "ALTER DATABASE $1 SET lc_messages TO 'C'" -c "ALTER DATABASE $1 SET lc_monetary TO 'C'" \
    -c "ALTER DATABASE $1 SET lc_numeric TO 'C'" -c "ALTER DATABASE $1 SET lc_time TO 'C'" \
    -c "ALTER DATABASE $1 SET bytea_output TO 'hex'" -c "ALTER DATABASE $1 SET timezone_abbreviations TO 'Default'" \
    -c "GRANT CREATE ON DATABASE $1 TO $OWNER" >/dev/null || return 1
  "$PG_BIN/psql" -X -q -U "$OWNER" -d "$1" -f "$ROOT/sql/portable/pg_idempotency_portable.sql" >"$OUT/install-$1.log" 2>&1 || {
    cat "$OUT/install-$1.log"; return 1; }
}

# Expected outputs: the extension's, with the reviewed differences applied;
# its alternatives for other majors (NAME_1.out, ...) too.
expected() {  # NAME -> $OUT/test/expected
  local name=$1 alt f
  if [ -f "$HERE/expected/$name.out" ]; then cp "$HERE/expected/$name.out" "$OUT/test/expected/"; return; fi
  for f in "$ROOT/test/expected/$name.out" "$ROOT/test/expected/${name}"_[0-9].out; do
    [ -f "$f" ] || continue
    alt=$(basename "$f")
    cp "$f" "$OUT/test/expected/$alt"
    if [ -f "$HERE/expected/$name.diff" ]; then
      patch -s --no-backup-if-mismatch "$OUT/test/expected/$alt" "$HERE/expected/$name.diff" || {
        echo "portable: test/portable/expected/$name.diff no longer applies to test/expected/$alt: review it" >&2
        return 1; }
    fi
  done
}

shopt -s nullglob
rc=0
tests=(); for f in "$ROOT"/test/sql/*.sql; do n=$(basename "$f" .sql); tests+=("$n"); cp "$f" "$OUT/test/sql/"; expected "$n" || rc=1; done
specs=(); for f in "$ROOT"/test/specs/*.spec; do
  n=$(basename "$f" .spec); specs+=("$n"); expected "$n" || rc=1
  # The edition is installed beforehand; CREATE EXTENSION in a setup block becomes a no-op.
  sed -E 's/^([[:space:]]*)CREATE[[:space:]]+EXTENSION[[:space:]]+(IF[[:space:]]+NOT[[:space:]]+EXISTS[[:space:]]+)?pg_idempotency[^;]*;/\1DO $$BEGIN END$$;/I' \
    "$f" >"$OUT/test/specs/$n.spec"
done

cat >"$OUT/bin/psql" <<SH
#!/bin/sh
PORTABLE_REAL_PSQL="$PG_BIN/psql" PORTABLE_STATE_DIR="$OUT/state" PORTABLE_SQL="$ROOT/sql/portable/pg_idempotency_portable.sql" PORTABLE_OWNER=$OWNER exec python3 "$HERE/psql_as_portable.py" "\$@"
SH
chmod +x "$OUT/bin/psql"

log=$OUT/summary.txt; : >"$log"
if [ ${#tests[@]} -gt 0 ]; then
  fresh_db portable_regress || exit 1
  # test/sql/07 writes its dump under test/results relative to the working directory.
  ( cd "$OUT" && PATH="$PG_BIN:$PATH" "$PGXS_DIR/test/regress/pg_regress" --use-existing --dbname=portable_regress \
      --bindir="$OUT/bin" --inputdir=test --outputdir=test "${tests[@]}" ) >>"$log" 2>&1 || rc=1
  q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS portable_regress" >/dev/null
fi
if [ ${#specs[@]} -gt 0 ]; then
  fresh_db portable_iso || exit 1
  mkdir -p "$OUT/test/isolation_output"
  ( cd "$OUT" && PATH="$PG_BIN:$PATH" "$PGXS_DIR/test/isolation/pg_isolation_regress" --use-existing --dbname=portable_iso \
      --inputdir=test --outputdir=test/isolation_output "${specs[@]}" ) >>"$log" 2>&1 || rc=1
  q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS portable_iso" >/dev/null
fi
cat "$log"
for f in "$OUT/test/regression.diffs" "$OUT/test/isolation_output/regression.diffs"; do
  [ -s "$f" ] && { echo "--- $f"; head -c 20000 "$f"; }
done
source "$ROOT/scripts/lib/pg-regress-counts.sh"
read -r passed failed < <(pg_regress_counts "$log")
[ $rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
if [ "$failed" -eq 0 ] && [ -z "$KEEP_OUT" ]; then
  rm -rf "$OUT"; echo "portable: $passed passed, $failed failed"
else
  echo "portable: $passed passed, $failed failed (output in $OUT)"
fi
[ "$failed" -eq 0 ]
