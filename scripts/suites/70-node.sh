#!/usr/bin/env bash
# The Node.js example (examples/node): npm ci, then its tests with Node's
# built-in runner against the cluster that scripts/test started (PG* exported):
# the demo service over real HTTP and the middleware on its own.
source "$(dirname "$0")/../lib/common.sh"
dir=$REPO_ROOT/examples/node
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Debian's nodejs comes without npm (other builds of nodejs bundle it).
if command -v node >/dev/null && ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are needed (Debian: nodejs npm)" >&2
  echo "0 1 node" >>"$SUITE_COUNTS"
  exit 1
fi
if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$out" 2>&1; then
  cat "$out"
  echo "npm ci failed in $dir" >&2
  echo "0 1 node" >>"$SUITE_COUNTS"
  exit 1
fi
reporter=()  # TAP, whose "# pass N" / "# fail N" lines are counted below (the default before Node 19)
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 19 ] && reporter=(--test-reporter=tap)
(cd "$dir" && node --test "${reporter[@]}" test/) >"$out" 2>&1
rc=$?
cat "$out"
passed=$(awk '/^# pass /{print $3}' "$out" | tail -1)
failed=$(awk '/^# fail /{print $3}' "$out" | tail -1)
passed=${passed:-0}
failed=${failed:-0}
[ $rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed $failed node" >>"$SUITE_COUNTS"
exit $rc
