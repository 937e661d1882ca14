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
# The host's suites need these as well.
DEB_PACKAGES=(
  "${MATRIX_PACKAGES[@]}"
  gnuplot-nox valgrind
  redis-server
  pgbouncer
  nodejs wrk
  prometheus prometheus-postgres-exporter
)
# Inside a chroot of scripts/lib/chroot.sh (PGI_CHROOT=1) only the matrix's.
[ -n "${PGI_CHROOT:-}" ] && DEB_PACKAGES=("${MATRIX_PACKAGES[@]}")
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

build_and_install() {
  log "building and installing the extension"
  # Warnings are errors in the builds the tests make (WERROR=1, IDEMPOTENCY_WERROR=ON);
  # both default to off for users and packagers.
  make -C "$REPO_ROOT" -s -j"$(nproc)" PG_CONFIG=$PG_BIN/pg_config WERROR=1 >/dev/null
  make -C "$REPO_ROOT" -s install PG_CONFIG=$PG_BIN/pg_config WERROR=1 >/dev/null
  if [ -f "$REPO_ROOT/CMakeLists.txt" ]; then
    log "building the C++ client, tests and demo"
    cmake -S "$REPO_ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIDEMPOTENCY_WERROR=ON ${CMAKE_EXTRA_ARGS:-} >/dev/null
    cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null
  fi
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
