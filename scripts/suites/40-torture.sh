#!/usr/bin/env bash
# Issue 7: exactly-once torture, multi-step holders dying between steps,
# memory and lock leaks, kill -9 and immediate-shutdown fault tests (on a
# throwaway cluster of their own), and the C++ client's tests under
# AddressSanitizer + UndefinedBehaviorSanitizer. Short mode by default;
# TORTURE_LONG=1 for the long one (see test/README.md).
source "$(dirname "$0")/../lib/common.sh"
out=$(mktemp)
bash "$REPO_ROOT/test/torture/run.sh" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
read -r passed failed < <(awk '$1 == "RESULT" {print $2, $3}' "$out")
if [ -z "${passed:-}" ]; then passed=0; failed=1; fi
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed $failed torture" >>"$SUITE_COUNTS"
rm -f "$out"
exit "$rc"
