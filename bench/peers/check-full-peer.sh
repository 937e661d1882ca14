#!/usr/bin/env bash
# The full-contract PL/pgSQL peer of the benchmark is now the portable edition,
# sql/portable/pg_idempotency_portable.sql (one implementation: bench/run
# installs the shipped file). This runs the extension's regression tests and
# isolation specs against it, in a database without the extension where a
# non-superuser installed it: test/portable/regress.sh, which scripts/test runs
# as suite 15-portable; expected differences: test/portable/differences.md.
#
# Usage: bench/peers/check-full-peer.sh                        (own throwaway cluster; root)
#        PGHOST=... PGPORT=... bench/peers/check-full-peer.sh  (a running server, as a superuser)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/scripts/lib/common.sh"
if [ -z "${PGHOST:-}" ]; then
  need_root
  trap stop_cluster EXIT
  trap 'exit 130' INT TERM
  start_cluster
fi
export PGUSER=${PGUSER:-postgres} PG_BIN
"$ROOT/test/portable/regress.sh"
