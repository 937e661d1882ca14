#!/usr/bin/env bash
# TAP tests of the background sweeper (test/t/*.pl, PostgreSQL::Test::Cluster).
# Each test starts its own preloaded clusters, so the suite cluster is unused.
# initdb refuses root: the tests run as the postgres OS user from a copy of
# test/t in a temp dir it owns (tmp_check/ and the logs go there; they are
# printed for failed tests). Appends "<passed> <failed> tap" (assertions) to
# $SUITE_COUNTS. Usage alone: scripts/suites/20-tap.sh [test/t/001_x.pl ...]
source "$(dirname "$0")/../lib/common.sh"
PGXS_DIR=$("$PG_BIN/pg_config" --pgxs)
PGXS_DIR=${PGXS_DIR%/src/makefiles/pgxs.mk}    # .../lib/pgxs
PERL_LIB=$PGXS_DIR/src/test/perl
PG_REGRESS_BIN=$PGXS_DIR/src/test/regress/pg_regress

work=$(mktemp -d /tmp/pg_idempotency_tap.XXXXXX)
cp -r "$REPO_ROOT/test/t" "$work/t"
chown -R postgres:postgres "$work"
tests=()
for t in "${@:-$REPO_ROOT/test/t/*.pl}"; do
  for f in $t; do tests+=("t/$(basename "$f")"); done
done

out=$work/prove.out
(cd "$work" && runuser -u postgres -- env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \
  PATH="$PG_BIN:$PATH" TESTDIR="$work" PG_REGRESS="$PG_REGRESS_BIN" PG_TEST_TIMEOUT_DEFAULT=60 \
  prove -v -I "$PERL_LIB" -I "$work/t" "${tests[@]}") 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}

# Assertions: "ok N - ..." / "not ok N - ..." lines of the TAP streams
# (a "# TODO" or "# skip" line counts as passed).
passed=$(grep -cE '^ok [0-9]+' "$out")
failed=$(grep -cE '^not ok [0-9]+' "$out")
# A test file that died or planned more than it ran counts as one failure more.
bad_files=$(grep -cE '^t/.*\.pl \.+ *(Dubious|Failed)' "$out" || true)
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
[ "$bad_files" -gt "$failed" ] && failed=$bad_files
if [ "$rc" -ne 0 ]; then
  # 15 writes the logs to tmp_check/log, 16 and later to log/.
  for log in "$work"/tmp_check/log/* "$work"/log/*; do
    [ -f "$log" ] || continue
    echo "--- $(basename "$log") (tail)"
    tail -n 40 "$log"
  done
fi
[ -n "${SUITE_COUNTS:-}" ] && echo "$passed $failed tap" >>"$SUITE_COUNTS"
echo "tap: $passed passed, $failed failed"
[ -z "${KEEP_TAP:-}" ] && rm -rf "$work"
exit "$rc"
