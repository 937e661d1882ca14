#!/usr/bin/env bash
# GoogleTest suite of the C++ client (test/cxx) and the out-of-tree
# find_package consumer, run by ctest in $BUILD_DIR against the cluster that
# scripts/test started (PGHOST/PGPORT/PGUSER exported).
source "$(dirname "$0")/../lib/common.sh"
if [ ! -f "$BUILD_DIR/CTestTestfile.cmake" ]; then
  echo "no CMake build in $BUILD_DIR" >&2
  echo "0 1 cxx" >>"$SUITE_COUNTS"
  exit 1
fi
out=$(mktemp)
# The tests run as the OS user that runs scripts/test; PGUSER names the role.
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 300 -j2) >"$out" 2>&1
rc=$?
cat "$out"
# "100% tests passed, 0 tests failed out of 57" / "95% tests passed, 3 tests failed out of 57"
line=$(grep -E 'tests? failed out of [0-9]+' "$out" | tail -1)
if [ -n "$line" ]; then
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  passed=$((total - failed))
else
  passed=0; failed=1
fi
[ $rc -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed $failed cxx" >>"$SUITE_COUNTS"
rm -f "$out"
exit $rc
