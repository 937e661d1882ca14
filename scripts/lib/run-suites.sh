# Runs the suites of scripts/suites/ (in name order) on one PostgreSQL major,
# here (on the host or inside a chroot of scripts/lib/chroot.sh): installs what
# is missing, builds, starts a throwaway preloaded cluster, runs the suites.
# Usage: bash scripts/lib/run-suites.sh COUNTS_FILE [suite-name-substring...]
# Appends each suite's "passed failed name" lines to COUNTS_FILE.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
COUNTS_OUT=$1; shift
need_root
# The build with warnings as errors counts as one test.
(set -e; install_packages; build_and_install)
if [ $? -ne 0 ]; then
  echo "0 1 build" >>"$COUNTS_OUT"
  exit 1
fi
export PATH=$PG_BIN:$PATH
echo "1 0 build" >>"$COUNTS_OUT"

export SUITE_COUNTS
SUITE_COUNTS=$(mktemp)
trap 'stop_cluster; cat "$SUITE_COUNTS" >>"$COUNTS_OUT"; rm -f "$SUITE_COUNTS"' EXIT
trap 'exit 130' INT TERM
# Sweeps of the shared cluster would race the regress tests' own sweep() checks;
# the sweeper's timing is tested by the TAP suite on clusters of its own.
start_cluster "idempotency.sweep_interval = '1h'"

for suite in "$REPO_ROOT"/scripts/suites/*.sh; do
  name=$(basename "$suite" .sh)
  if [ $# -gt 0 ]; then
    wanted=; for w in "$@"; do [[ $name == *"$w"* ]] && wanted=1; done
    [ -n "$wanted" ] || continue
  fi
  log "suite $name (PostgreSQL $PG_MAJOR)"
  before=$(wc -l <"$SUITE_COUNTS")
  bash "$suite"
  rc=$?
  # A suite reports "passed failed name" lines itself; a suite that exits
  # non-zero without reporting any failure counts as one failure more.
  if [ $rc -ne 0 ] && ! tail -n +"$((before + 1))" "$SUITE_COUNTS" | awk '$2 > 0 {f=1} END {exit !f}'; then
    echo "0 1 $name" >>"$SUITE_COUNTS"
  fi
done
