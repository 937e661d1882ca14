#!/usr/bin/env bash
# pg_regress (test/sql) and isolation specs (test/specs) via make installcheck,
# as two runs: PGXS's installcheck stops at the first failing step, and a
# regress failure must not hide the isolation results.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pg-regress-counts.sh"
cd "$REPO_ROOT"
rc=0
for step in regress isolation; do
  out=$(mktemp)
  case $step in
    regress)   make -s installcheck PG_CONFIG=$PG_BIN/pg_config ISOLATION= >"$out" 2>&1 ;;
    isolation) make -s installcheck PG_CONFIG=$PG_BIN/pg_config REGRESS= >"$out" 2>&1 ;;
  esac
  step_rc=$?
  cat "$out"
  diffs=test/regression.diffs
  [ $step = isolation ] && diffs=test/isolation_output/regression.diffs
  [ $step_rc -ne 0 ] && [ -s "$diffs" ] && { echo "--- $diffs"; head -c 20000 "$diffs"; }
  read -r passed failed < <(pg_regress_counts "$out")
  [ $step_rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
  [ $step_rc -eq 0 ] && [ "$passed" -eq 0 ] && failed=1   # nothing counted: a new output format?
  echo "$passed $failed $step" >>"$SUITE_COUNTS"
  [ $step_rc -ne 0 ] && rc=1
  rm -f "$out"
done
exit $rc
