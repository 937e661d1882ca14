#!/usr/bin/env bash
# Node.js, against the cluster that scripts/test started (PG* exported), with
# the package installed as users install it:
#   - `npm pack` in node-client/, the tarball installed into a clean temporary
#     project (`npm install ./pg-idempotency-*.tgz` and its peers), the package's
#     tests (node-client/test, Node's built-in runner) run there against the
#     installed copy, directly and through PgBouncer in transaction mode, and
#     `tsc --noEmit` on a typed usage file against its declarations: a file
#     missing from the package fails here;
#   - the demo service (examples/node, which depends on node-client/ by path):
#     npm ci, then its tests over real HTTP.
# One "passed failed node" line sums them all.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pgbouncer.sh"
pkg_dir=$REPO_ROOT/node-client
example_dir=$REPO_ROOT/examples/node
WORK=$(mktemp -d /tmp/pg_idempotency_node.XXXXXX)
chmod 755 "$WORK"
trap 'stop_pgbouncer; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
passed=0; failed=0
report() { echo "$passed $failed node" >>"$SUITE_COUNTS"; }

# Debian's nodejs comes without npm (other builds of nodejs bundle it).
if command -v node >/dev/null && ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are needed (Debian: nodejs npm)" >&2
  failed=1; report; exit 1
fi
reporter=()  # TAP, whose "# pass N" / "# fail N" lines are counted below (the default before Node 19)
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 19 ] && reporter=(--test-reporter=tap)

# node_tests LABEL DIR PATTERN: runs the test files PATTERN matches in DIR
# (expanded there) with Node's runner and adds their counts.
node_tests() {
  local label=$1 dir=$2 pattern=$3 out=$WORK/$1.log rc p f
  log "node: $label"
  # shellcheck disable=SC2086  # PATTERN is a glob, expanded in DIR
  (cd "$dir" && timeout 600 node --test "${reporter[@]}" $pattern) >"$out" 2>&1
  rc=$?
  p=$(awk '/^# pass /{print $3}' "$out" | tail -1); f=$(awk '/^# fail /{print $3}' "$out" | tail -1)
  p=${p:-0}; f=${f:-0}
  [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)); failed=$((failed + f))
  log "node: $label: $p passed, $f failed"
  [ "$f" -gt 0 ] && cat "$out" >&2
}

# ---- the package, as a user installs it -------------------------------------
app=$WORK/app
mkdir -p "$app"
if ! (cd "$pkg_dir" && npm pack --silent --pack-destination "$WORK") >"$WORK/pack.log" 2>&1; then
  cat "$WORK/pack.log" >&2; echo "npm pack failed in $pkg_dir" >&2
  failed=$((failed + 1)); report; exit 1
fi
tarball=$(ls "$WORK"/pg-idempotency-*.tgz)
log "node: $(basename "$tarball"): $(tar tzf "$tarball" | sed 's#^package/##' | sort | tr '\n' ' ')"
# The peers and the test tools, at the versions node-client/package.json pins for development.
mapfile -t deps < <(node -e '
  const p = require(process.argv[1]);
  for (const [n, v] of Object.entries(p.devDependencies)) console.log(`${n}@${v}`);' "$pkg_dir/package.json")
echo '{"name": "pg-idempotency-installed-test", "private": true}' >"$app/package.json"
if ! (cd "$app" && npm install --no-audit --no-fund --loglevel=error "$tarball" "${deps[@]}") >"$WORK/install.log" 2>&1; then
  cat "$WORK/install.log" >&2; echo "npm install of the packed tarball failed" >&2
  failed=$((failed + 1)); report; exit 1
fi
cp -r "$pkg_dir/test" "$app/test"  # the tests are not in the package; they use the installed one
if [ -L "$app/node_modules/pg-idempotency" ] || [ ! -f "$app/node_modules/pg-idempotency/package.json" ]; then
  echo "pg-idempotency is not installed from the tarball in $app" >&2; failed=$((failed + 1))
fi

node_tests package "$app" 'test/*.test.js'

log "node: tsc --noEmit on test/typed-usage.ts against the installed declarations"
if (cd "$app" && npx --no-install tsc -p test/tsconfig.json) >"$WORK/tsc.log" 2>&1; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); cat "$WORK/tsc.log" >&2
fi

if [ -x /usr/sbin/pgbouncer ]; then
  if start_pgbouncer 4; then
    PGHOST=127.0.0.1 PGPORT=$BOUNCER_PORT NODE_API_TEST_DB=idempotency_node_api_bouncer \
      NODE_MIDDLEWARE_TEST_DB=idempotency_node_mw_bouncer node_tests package-through-pgbouncer "$app" 'test/*.test.js'
    stop_pgbouncer
  else
    failed=$((failed + 1))
  fi
fi

# ---- the demo service on the package ----------------------------------------
if ! (cd "$example_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/ci.log" 2>&1; then
  cat "$WORK/ci.log" >&2; echo "npm ci failed in $example_dir" >&2
  failed=$((failed + 1)); report; exit 1
fi
node_tests example "$example_dir" test/

report
[ "$failed" -eq 0 ]
