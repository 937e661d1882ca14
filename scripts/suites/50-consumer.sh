#!/usr/bin/env bash
# The Redis Streams consumer scenario of scripts/demo --consumer, bounded
# (2,000 payments, 200 of them published twice) on the shared cluster: three
# consumers, one SIGKILLed right after a COMMIT and before its XACK, one killed
# with kill -9 mid-stream and restarted. Asserts the report's counts.
source "$(dirname "$0")/../lib/common.sh"
source "$REPO_ROOT/scripts/lib/consumer-scenario.sh"
trap '_scenario_stop' EXIT
passed=0 failed=0
out=$(mktemp)
consumer_scenario 2000 10 >"$out" 2>&1
rc=$?
cat "$out"
report=$(grep '^REPORT ' "$out")
rm -f "$out"
value() { sed -nE "s/.* $1=([0-9]+).*/\1/p" <<<"$report"; }
check() {  # check NAME CONDITION...
  local name=$1; shift
  if [ -n "$report" ] && "$@"; then echo "ok   - $name"; passed=$((passed + 1)); else echo "FAIL - $name" >&2; failed=$((failed + 1)); fi
}
check "the scenario and its report succeed" [ "$rc" -eq 0 ]
check "2,200 messages published for 2,000 business ids" [ "$(value published)" = 2200 -a "$(value distinct)" = 2000 ]
check "effects applied == distinct business ids" [ "$(value effects)" = 2000 ]
check "no business id applied twice, none missing" [ "$(value duplicates_in_ledger)" = 0 -a "$(value missing)" = 0 ]
check "every message delivered at least once" [ "$(value deliveries)" -ge 2200 ]
check "the killed consumers' entries were redelivered" [ "$(value redeliveries)" -ge 1 ]
check "the entry committed but never acked answered false on redelivery" [ "$(value after_commit)" -ge 1 ]
check "nothing left pending in the group" [ "$(value pending)" = 0 ]
redis_gone() { [ -n "${SCENARIO_STOPPED_REDIS_PID:-}" ] && ! kill -0 "$SCENARIO_STOPPED_REDIS_PID" 2>/dev/null; }
check "no redis-server left running" redis_gone
echo "$passed $failed consumer" >>"$SUITE_COUNTS"
[ "$failed" -eq 0 ]
