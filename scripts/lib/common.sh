# Shared set-up for scripts/demo, scripts/test and bench/run: install what is
# missing, build and install, and run throwaway clusters as the postgres user.
# Source it; it defines functions only.

# PG_MAJOR: the PostgreSQL major to build and test against, 15 (the host's,
# Debian 12) unless set in the environment or by `scripts/test --pg N`.
# PG_BIN may point at another (e.g. relocated) installation of it; when only
# PG_BIN is given, its pg_config names the major.
if [ -z "${PG_MAJOR:-}" ] && [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/pg_config" ]; then
  PG_MAJOR=$("$PG_BIN/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
fi
PG_MAJOR=${PG_MAJOR:-15}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
export PG_MAJOR
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO_ROOT/build}

# What the build and the suites that run on every major (see scripts/test's
# MATRIX_SUITES) need: the chroots of other majors get only these.
MATRIX_PACKAGES=(
  build-essential cmake pkg-config
  postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libpq-dev postgresql-$PG_MAJOR-cron
  libipc-run-perl libgtest-dev libgmock-dev libbenchmark-dev libpqxx-dev
  libcpp-httplib-dev nlohmann-json3-dev libhiredis-dev curl
  python3 patch procps iproute2
)
# Only in the chroots (Debian 13 and later ship them, Debian 12 does not): the
# OpenTelemetry adapter's build and tests; trixie's opentelemetry-cpp needs
# Abseil's headers without depending on them.
CHROOT_PACKAGES=(opentelemetry-cpp-dev libabsl-dev)
# What a suite needs on top of those where a chroot runs it (scripts/test's
# MAJOR_SUITES, or one asked for by name): the pooler suite's PgBouncer, and
# Redis for its consumer scenario. scripts/lib/chroot.sh installs them.
declare -gA SUITE_PACKAGES=([80-pooler]="pgbouncer redis-server")
# The host's suites need these as well.
DEB_PACKAGES=(
  "${MATRIX_PACKAGES[@]}"
  gnuplot-nox valgrind
  redis-server
  python3-venv python3-build python3-setuptools python3-wheel python3-psycopg python3-psycopg-pool
  python3-psycopg2 python3-starlette python3-fastapi uvicorn python3-django python3-redis python3-pytest
  pgbouncer
  nodejs wrk
  prometheus prometheus-postgres-exporter
)
# Inside a chroot of scripts/lib/chroot.sh (PGI_CHROOT=1) only the matrix's and the chroots' own.
[ -n "${PGI_CHROOT:-}" ] && DEB_PACKAGES=("${MATRIX_PACKAGES[@]}" "${CHROOT_PACKAGES[@]}")
# Extra apt-get options (sid's Release file may be past its Valid-Until).
APT_OPTS=${APT_OPTS:-}

log() { printf '==> %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "run this as root (it installs packages and starts a cluster as the postgres user)" >&2
    exit 1
  fi
}

# Installs only what is missing, so a machine that has everything skips apt.
install_packages() {
  local missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get $APT_OPTS update -qq
    # The Debian package would start its own cluster on 5432: keep it down.
    local policy=/usr/sbin/policy-rc.d created_policy=
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created_policy=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$created_policy" ] && rm -f $policy
  fi
  export PATH=$PG_BIN:$PATH
}

# timed WHAT COMMAND...: runs a long step with its output in a log, saying every
# 10 s that it is still running and, at the end, how long it took. On failure
# it shows the log's tail.
timed() {
  local what=$1; shift
  local start=$SECONDS steplog
  steplog=$(mktemp /tmp/pg_idempotency-step.XXXXXX)
  log "$what"
  "$@" >"$steplog" 2>&1 &
  local pid=$! rc
  local shown=0
  while kill -0 $pid 2>/dev/null; do
    sleep 0.2
    if [ $((SECONDS - start)) -ge $((shown + 10)) ] && kill -0 $pid 2>/dev/null; then
      shown=$((shown + 10))
      printf '    ... %s: %d s%s\n' "$what" $((SECONDS - start)) "$(_step_progress "$steplog")" >&2
    fi
  done
  rc=0; wait $pid || rc=$?
  if [ $rc -ne 0 ]; then tail -n 40 "$steplog" >&2; rm -f "$steplog"; return $rc; fi
  printf '    done in %d s\n' $((SECONDS - start)) >&2
  rm -f "$steplog"
}
# How far a build is: the last "[ NN%]" of a CMake log, or for the extension's
# make the files compiled so far out of all of them.
_step_progress() {
  local pct compiled
  pct=$(grep -o '^\[ *[0-9]*%\]' "$1" 2>/dev/null | tail -1)
  if [ -n "$pct" ]; then echo ", $pct"; return; fi
  compiled=$(grep -c -- ' -c -o extension/' "$1" 2>/dev/null)
  [ "${compiled:-0}" -gt 0 ] && echo ", compiling file $compiled of $(find "$REPO_ROOT/extension" -name '*.cpp' | wc -l)"
}

# Warnings are errors in the builds the tests make (WERROR=1, IDEMPOTENCY_WERROR=ON);
# both default to off for users and packagers.
_make_extension() {
  make -C "$REPO_ROOT" -j"$(nproc)" PG_CONFIG="$PG_BIN/pg_config" WERROR=1 &&
    make -C "$REPO_ROOT" -s install PG_CONFIG="$PG_BIN/pg_config" WERROR=1
}
build_extension() { timed "building and installing the extension" _make_extension; }

_cmake_build() {  # [--target T]...
  cmake -S "$REPO_ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIDEMPOTENCY_WERROR=ON ${CMAKE_EXTRA_ARGS:-} &&
    cmake --build "$BUILD_DIR" -j"$(nproc)" "$@"
}
# build_cxx [TARGET...]: the C++ client and the named targets (default: all of
# them, tests included).
build_cxx() {
  [ -f "$REPO_ROOT/CMakeLists.txt" ] || return 0
  local targets=() t
  for t in "$@"; do targets+=(--target "$t"); done
  if [ $# -gt 0 ]; then timed "building $*" _cmake_build "${targets[@]}"
  else timed "building the C++ client, tests and demo" _cmake_build; fi
}

build_and_install() {
  build_extension || return 1
  build_cxx
}

# start_cluster [extra postgresql.conf lines...]
# Creates a cluster in a fresh temp dir, owned by postgres, on a free private
# port with its socket in that dir, with pg_idempotency preloaded. Exports
# PGHOST, PGPORT, PGUSER, PGDATA_DIR, CLUSTER_DIR. stop_cluster undoes it.
start_cluster() {
  CLUSTER_DIR=$(mktemp -d /tmp/pg_idempotency.XXXXXX)
  chown postgres:postgres "$CLUSTER_DIR"
  chmod 755 "$CLUSTER_DIR"
  PGDATA_DIR=$CLUSTER_DIR/data
  local port
  port=$(free_port)
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres --no-sync >/dev/null
  cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$CLUSTER_DIR'
shared_preload_libraries = 'pg_idempotency'
fsync = off
max_connections = 100
CONF
  for line in "$@"; do echo "$line" >>"$PGDATA_DIR/postgresql.conf"; done
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$CLUSTER_DIR/server.log" -w -t 60 start >/dev/null
  export PGHOST=$CLUSTER_DIR PGPORT=$port PGUSER=postgres PGDATABASE=postgres CLUSTER_DIR PGDATA_DIR
  log "cluster up: socket $PGHOST port $PGPORT"
}

stop_cluster() {
  if [ -n "${PGDATA_DIR:-}" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR" ] && [ -z "${KEEP_CLUSTER:-}" ]; then
    rm -rf "$CLUSTER_DIR"
  fi
}

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$p" ]; then
      echo $p; return
    fi
  done
  echo 54329
}
