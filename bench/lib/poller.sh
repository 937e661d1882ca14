# Reading a window's progress without disturbing what the window measures.
#
# Sourced by bench/run and bench/sweep_p99. Their sweep windows used to start
# a psql (and so a new backend) and a python3 every 50-100 ms to see how far
# the sweeper was; the baseline windows polled nothing. On this machine the
# python3 on PATH is a version-manager shim costing about 0.7 s of CPU a
# start: the polling took most of a core, in the sweep windows only, and the
# claims' run-queue delay and p50 doubled there whatever the sweeper did.
# Here one psql session stays open as a coprocess, clocks come from bash's
# EPOCHREALTIME, and both windows poll alike.

# Opens the session (psql arguments as for q; PGHOST etc. from the environment).
poller_start() {
  coproc POLLER { exec psql -X -q -At "$@" 2>/dev/null; }
}

# Runs one single-row, single-column query; its value in REPLY (empty on failure).
poll() {
  REPLY=
  printf '%s\n' "$1" >&"${POLLER[1]}" || return 1
  read -r -t 10 -u "${POLLER[0]}" REPLY
}

poller_stop() {
  [ -n "${POLLER_PID:-}" ] || return 0
  local pid=$POLLER_PID
  printf '\\q\n' >&"${POLLER[1]}" 2>/dev/null
  wait "$pid" 2>/dev/null
}

# The time now in microseconds since the epoch, in NOW_US (no process started).
now_us() { NOW_US=${EPOCHREALTIME/./}; }

# Microseconds as seconds with six decimals, for report.py's windows.
us_to_s() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }
