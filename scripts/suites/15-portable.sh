#!/usr/bin/env bash
# The portable edition (sql/portable/): the extension's own regress tests and
# isolation specs against it (test/portable/regress.sh), installing it
# (non-superuser, re-run, refusal), concurrent duplicates with parallel
# clients, moving between the editions both ways, sweeping with pg_cron and a
# hot standby (clusters of their own). Differences: test/portable/differences.md.
source "$(dirname "$0")/../lib/common.sh"
cd "$REPO_ROOT"
export PG_BIN
T=test/portable
passed=0; failed=0
count() {  # NAME OUTPUT_FILE RC: PASS/FAIL lines, or the regress summary line
  local n p f
  if grep -q '^portable: [0-9]* passed' "$2"; then
    read -r p f < <(sed -nE 's/^portable: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$2")
  else
    p=$(grep -c '^PASS: ' "$2"); f=$(grep -c '^FAIL: ' "$2")
  fi
  [ "$3" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)); failed=$((failed + f))
  echo "$1: $p passed, $f failed"
}
out=$(mktemp)
# cron.sh mostly waits for the top of a minute on a cluster of its own: run it
# meanwhile.
cron_out=$(mktemp)
bash $T/cron.sh >"$cron_out" 2>&1 &
cron_pid=$!
for t in regress install concurrency migrate standby cron; do
  echo "--- portable $t"
  case $t in
    concurrency)
      # A database with the edition and an application role that has only the documented grants.
      source $T/lib.sh
      fresh_db portable_conc && install_portable portable_conc >/dev/null 2>&1
      sql postgres -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS pgi_conc_app" -c "CREATE ROLE pgi_conc_app LOGIN" >/dev/null
      sql portable_conc -c "GRANT USAGE ON SCHEMA idempotency TO pgi_conc_app" \
        -c "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi_conc_app" \
        -c "GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi_conc_app" \
        -c "CREATE SCHEMA conc AUTHORIZATION pgi_conc_app" >/dev/null
      PGDATABASE=portable_conc PGUSER=pgi_conc_app CONC_SCHEMA=conc bash $T/concurrency.sh 12 3 >"$out" 2>&1
      rc=$?
      drop_db portable_conc; sql postgres -c "DROP ROLE IF EXISTS pgi_conc_app" >/dev/null
      ;;
    cron) wait $cron_pid; rc=$?; cp "$cron_out" "$out"; rm -f "$cron_out" ;;
    *) bash $T/$t.sh >"$out" 2>&1; rc=$? ;;
  esac
  grep -vE '^PASS: ' "$out" | head -c 20000
  count "$t" "$out" $rc
done
rm -f "$out"
echo "$passed $failed portable" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
