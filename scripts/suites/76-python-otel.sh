#!/usr/bin/env bash
# The ASGI and Django middleware's OpenTelemetry spans, replay link and metrics
# (python-client/tests_otel), with the SDK's in-memory exporter and reader,
# against the cluster that scripts/test started (PG* exported). It needs
# python3-opentelemetry-sdk, which Debian 12 lacks: there (the host) the suite
# reports nothing and exits 0; in a chroot whose Debian has it (sid) it
# installs it, the ASGI stack and Django first. Reports "passed failed python-otel".
source "$(dirname "$0")/../lib/common.sh"
PY=/usr/bin/python3
PACKAGES=(python3-opentelemetry-sdk python3-psycopg python3-psycopg-pool python3-starlette uvicorn python3-pytest
          python3-django)
MODULES='import opentelemetry.sdk, psycopg, psycopg_pool, starlette, uvicorn, pytest, django'

if [ -n "${PGI_CHROOT:-}" ] && ! "$PY" -c "$MODULES" 2>/dev/null; then
  candidate=$(apt-cache policy python3-opentelemetry-sdk 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    # shellcheck disable=SC2086  # APT_OPTS is a list of options
    DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  fi
fi
if ! "$PY" -c "$MODULES" 2>/dev/null; then
  log "python-otel: skipped (no python3-opentelemetry-sdk here)"
  exit 0
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cd / && PYTHONPATH=$REPO_ROOT/python-client/src "$PY" -m pytest -q -p no:cacheprovider \
  "$REPO_ROOT/python-client/tests_otel" 2>&1 | tee "$out"
# pytest's last line: "== 2 passed, 1 failed, 1 error in 3.1s ==" (errors count as failures).
summary=$(grep -E '[0-9]+ (passed|failed|error)' "$out" | tail -1)
count() { grep -oE "[0-9]+ $1" <<<"$summary" | grep -oE '[0-9]+'; }
passed=$(count passed); failed=$(count failed); errors=$(count error)
passed=${passed:-0}; failed=$((${failed:-0} + ${errors:-0}))
[ "$passed" -gt 0 ] || [ "$failed" -gt 0 ] || failed=1  # pytest ran nothing: that is a failure
echo "$passed $failed python-otel" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
