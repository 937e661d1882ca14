#!/usr/bin/env bash
# pg_regress (test/sql) and isolation specs (test/specs) via make installcheck.
source "$(dirname "$0")/../lib/common.sh"
cd "$REPO_ROOT"
out=$(mktemp)
make -s installcheck PG_CONFIG=$PG_BIN/pg_config >"$out" 2>&1
rc=$?
cat "$out"
for f in test/regression.diffs test/isolation_output/regression.diffs; do
  [ -s "$f" ] && { echo "--- $f"; head -c 20000 "$f"; }
done
# pg_regress lines look like "ok 3  - name  12 ms" / "test name ... ok" (PG15: "test x ... ok")
passed=$(grep -cE '^(test| ) +[^ ]+ +\.\.\. ok' "$out")
failed=$(grep -cE '^(test| ) +[^ ]+ +\.\.\. FAILED' "$out")
[ $rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed $failed regress+isolation" >>"$SUITE_COUNTS"
rm -f "$out"
exit $rc
