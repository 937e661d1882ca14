#!/usr/bin/env bash
# bench/lib/majors.sh OUTDIR MAJOR...: bench/run on each PostgreSQL major, then
# one table with a column per major (bench/run --pg 15,17,18 calls it).
#
# The host's major runs here; the others inside the Debian chroots that
# scripts/test uses for them (scripts/lib/chroot.sh: 17 in trixie, 18 in sid;
# CHROOT_CACHE picks the copy), on a copy of this tree, each building the
# extension and the benchmark's client there. Majors run one after the other;
# within each, ours and its baselines run interleaved as always, so every
# ratio compares runs of the same minutes. OUTDIR/pgN holds each major's
# bench/out; OUTDIR/table.md the side-by-side table.
# The BENCH_* settings (BENCH_QUICK, BENCH_WORKLOADS, BENCH_ROUNDS, ...) apply
# to every major.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/lib/common.sh"
source "$HERE/../../scripts/lib/chroot.sh"
need_root
OUT=${1:?OUTDIR}; shift
[ $# -gt 0 ] || { echo "majors.sh: no majors given" >&2; exit 2; }
HOST_MAJOR=$PG_MAJOR
for m in "$@"; do [ "$m" = "$HOST_MAJOR" ] || chroot_suite "$m" >/dev/null || exit 2; done

PASS=()   # the run's settings, handed to every major's bench/run
for v in BENCH_QUICK BENCH_SKIP_BUILD BENCH_SKIP_CALLGRIND BENCH_WORKLOADS BENCH_ROUNDS BENCH_SECONDS \
         BENCH_SWEEP_ROWS BENCH_STEADY_SECONDS; do
  [ -n "${!v:-}" ] && PASS+=("$v=${!v}")
done

rm -rf "$OUT"; mkdir -p "$OUT"
STARTED=$(date -u +%s)
done_majors=()
for m in "$@"; do
  log "bench/run on PostgreSQL $m"
  if [ "$m" = "$HOST_MAJOR" ]; then
    env "${PASS[@]}" BENCH_OUT="$OUT/pg$m" BENCH_MAJORS= bash "$HERE/../run" >"$OUT/run-pg$m.txt" 2>"$OUT/log-pg$m.txt"
  else
    root=$(chroot_root "$m")
    if ! { chroot_ensure "$m" && chroot_sync "$m"; }; then
      log "PostgreSQL $m: the $(chroot_suite "$m") chroot is not usable; skipped"; continue
    fi
    # valgrind for the callgrind counts, where the chroot lacks it (only what is missing).
    chroot "$root" dpkg-query -W -f='${Status}' valgrind 2>/dev/null | grep -q 'install ok installed' ||
      chroot_exec "$root" DEBIAN_FRONTEND=noninteractive bash -c \
        "apt-get $(chroot_apt_opts "$m") -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends valgrind" \
        >"$OUT/apt-pg$m.txt" 2>&1
    chroot_exec "$root" PG_MAJOR="$m" APT_OPTS="$(chroot_apt_opts "$m")" "${PASS[@]}" BENCH_OUT=/root/bench-out \
      bash "$CHROOT_SRC/bench/run" >"$OUT/run-pg$m.txt" 2>"$OUT/log-pg$m.txt"
    rm -rf "$OUT/pg$m"; cp -a "$root/root/bench-out" "$OUT/pg$m" 2>/dev/null
  fi
  if [ -s "$OUT/pg$m/runs.tsv" ]; then done_majors+=("$m"); else log "PostgreSQL $m: no figures (see $OUT/log-pg$m.txt)"; fi
done

echo "bench/run --pg $(IFS=,; echo "$*") $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date -u +%s) - STARTED ))s" \
     "${BENCH_QUICK:+(BENCH_QUICK)}${BENCH_WORKLOADS:+ workloads $BENCH_WORKLOADS}"
echo "machine: $(nproc) x $(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(uname -r)"
for m in "${done_majors[@]}"; do sed -n '3p' "$OUT/pg$m/header.txt" | sed "s/^/  $m: /"; done
echo
[ ${#done_majors[@]} -gt 0 ] && python3 "$HERE/report.py" majors "$OUT" "${done_majors[@]}"
for m in "${done_majors[@]}"; do
  [ -s "$OUT/pg$m/callgrind.txt" ] && { echo; echo "callgrind on $m:"; sed 's/^/  /' "$OUT/pg$m/callgrind.txt"; }
  [ -s "$OUT/pg$m/callgrind-wire.txt" ] && { echo; echo "callgrind over the wire on $m:"; sed 's/^/  /' "$OUT/pg$m/callgrind-wire.txt"; }
  [ -s "$OUT/pg$m/notes.txt" ] && { echo; echo "notes on $m:"; sed 's/^/  /' "$OUT/pg$m/notes.txt"; }
done
echo "each major's own table and raw figures: $OUT/pgN/"
