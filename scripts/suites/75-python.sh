#!/usr/bin/env bash
# The Python package (python-client/) as users install it: a wheel and an sdist
# built with Debian's python3-build (no isolation, offline), each installed into
# a fresh venv (--system-site-packages, pip --no-build-isolation --no-deps), and
# pytest run from outside the source tree against the installed package: the
# client on the cluster that scripts/test started (PG* exported), the ASGI
# middleware under uvicorn, the Django middleware under Django's server, the
# three demo services (Python, C++, Node) directly and through PgBouncer, and
# the Redis Streams consumer. Reports "passed failed python" from pytest's
# summary and "passed failed python-package" for the packaging steps.
source "$(dirname "$0")/../lib/common.sh"
source "$REPO_ROOT/scripts/lib/pgbouncer.sh"
PY=/usr/bin/python3  # Debian's, which sees python3-psycopg and friends
work=$(mktemp -d /tmp/pg_idempotency_python.XXXXXX)
trap 'stop_pgbouncer; rm -rf "$work"' EXIT
pkg_passed=0 pkg_failed=0
step() {  # step NAME COMMAND...: one packaging check
  local name=$1; shift
  if "$@" >"$work/step.log" 2>&1; then
    echo "ok   - $name"; pkg_passed=$((pkg_passed + 1))
  else
    cat "$work/step.log"; echo "FAIL - $name" >&2; pkg_failed=$((pkg_failed + 1))
  fi
}
give_up() {
  echo "$pkg_passed $((pkg_failed + 1)) python-package" >>"$SUITE_COUNTS"
  exit 1
}

# The Node example is one of the services the cross-language tests start.
if command -v node >/dev/null && ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
(cd "$REPO_ROOT/examples/node" && npm ci --no-audit --no-fund --loglevel=error) >"$work/npm.log" 2>&1 ||
  { cat "$work/npm.log"; echo "npm ci failed in examples/node" >&2; give_up; }

# Build from a copy, so that nothing is written into the source tree.
cp -r "$REPO_ROOT/python-client" "$work/src"
step "python3 -m build --no-isolation makes a wheel and an sdist" \
  "$PY" -m build --no-isolation --outdir "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/*.whl 2>/dev/null | head -1)
sdist=$(ls "$work"/dist/*.tar.gz 2>/dev/null | head -1)
[ -n "$wheel" ] && [ -n "$sdist" ] || give_up
step "the sdist installs offline into a fresh venv" sh -c \
  "'$PY' -m venv --system-site-packages '$work/venv-sdist' &&
   '$work/venv-sdist/bin/pip' install -q --no-build-isolation --no-deps --no-index '$sdist' &&
   cd / && '$work/venv-sdist/bin/python' -c 'import pg_idempotency.asgi, pg_idempotency.django, pg_idempotency.consumer'"
step "the wheel installs offline into a fresh venv" sh -c \
  "'$PY' -m venv --system-site-packages '$work/venv' &&
   '$work/venv/bin/pip' install -q --no-build-isolation --no-deps --no-index '$wheel'"
step "the tests import the installed package, not the source tree" sh -c \
  "cd / && '$work/venv/bin/python' -c 'import pg_idempotency, sys; p = pg_idempotency.__file__; print(p); sys.exit(not p.startswith(\"$work/venv/\"))'"
echo "$pkg_passed $pkg_failed python-package" >>"$SUITE_COUNTS"
[ "$pkg_failed" -eq 0 ] || exit 1

start_pgbouncer 4 || { echo "0 1 python" >>"$SUITE_COUNTS"; exit 1; }
cp -r "$REPO_ROOT/python-client/tests" "$work/tests"
out=$work/pytest.log
(cd "$work/tests" && REPO_ROOT=$REPO_ROOT BUILD_DIR=$BUILD_DIR BOUNCER_PORT=$BOUNCER_PORT \
  timeout 900 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider -o console_output_style=classic .) \
  >"$out" 2>&1
rc=$?
cat "$out"
# pytest's last line: "== 80 passed, 1 failed, 2 errors in 61.2s ==" (errors count as failures).
summary=$(grep -E '[0-9]+ (passed|failed|error)' "$out" | tail -1)
count() { sed -nE "s/.*[^0-9]([0-9]+) $1.*/\1/p; s/^([0-9]+) $1.*/\1/p" <<<" $summary" | head -1; }
passed=$(count passed); failed=$(count failed); errors=$(count error)
passed=${passed:-0}; failed=$((${failed:-0} + ${errors:-0}))
[ $rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed $failed python" >>"$SUITE_COUNTS"
exit $rc
