# PgBouncer in front of the cluster that start_cluster started (source after
# common.sh). start_pgbouncer POOL_SIZE [INI LINE...] runs Debian's pgbouncer
# as the postgres user on a free loopback port, in transaction pooling mode,
# with at most POOL_SIZE server connections per database and user, plus the
# given [pgbouncer] settings; it exports BOUNCER_PORT and BOUNCER_DIR.
# stop_pgbouncer stops it and removes its dir. PGBOUNCER may name another
# pgbouncer command (a path, or a command with arguments).
# pgbouncer_version prints its version (e.g. 1.18.0), pgbouncer_at_least
# 1.21 tells whether it is that version or newer.
# Authentication: the cluster trusts local connections, so PgBouncer does too
# (auth_type = trust); user names it has not seen are looked up in the
# cluster by auth_query, so roles a test creates can log in through it.

PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

pgbouncer_version() { $PGBOUNCER --version 2>/dev/null | sed -nE '1s/^PgBouncer ([0-9.]+).*/\1/p'; }

pgbouncer_at_least() {
  local have
  have=$(pgbouncer_version)
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -1)" = "$1" ]
}

start_pgbouncer() {
  local pool_size=${1:-4}
  [ $# -gt 0 ] && shift
  BOUNCER_DIR=$(mktemp -d /tmp/pg_idempotency_bouncer.XXXXXX)
  chown postgres:postgres "$BOUNCER_DIR"
  BOUNCER_PORT=$(free_port)
  echo '"postgres" ""' >"$BOUNCER_DIR/userlist.txt"
  cat >"$BOUNCER_DIR/pgbouncer.ini" <<INI
[databases]
* = host=$PGHOST port=$PGPORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir = $BOUNCER_DIR
pidfile = $BOUNCER_DIR/pgbouncer.pid
logfile = $BOUNCER_DIR/pgbouncer.log
auth_type = trust
auth_file = $BOUNCER_DIR/userlist.txt
auth_user = postgres
auth_query = SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = \$1
pool_mode = transaction
default_pool_size = $pool_size
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = 0
admin_users = postgres
stats_users = postgres
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
query_wait_timeout = 60
INI
  local line
  for line in "$@"; do echo "$line" >>"$BOUNCER_DIR/pgbouncer.ini"; done
  chown -R postgres:postgres "$BOUNCER_DIR"
  runuser -u postgres -- $PGBOUNCER -d "$BOUNCER_DIR/pgbouncer.ini" >/dev/null 2>&1 || {
    log "pgbouncer did not start:"; cat "$BOUNCER_DIR/pgbouncer.log" >&2; return 1
  }
  local i
  for i in $(seq 1 50); do
    psql -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -d postgres -XAtqc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  export BOUNCER_PORT BOUNCER_DIR
  log "pgbouncer $(pgbouncer_version) up: 127.0.0.1:$BOUNCER_PORT, transaction mode, $pool_size server connections per pool${*:+, $*}"
}

stop_pgbouncer() {
  if [ -n "${BOUNCER_DIR:-}" ] && [ -f "$BOUNCER_DIR/pgbouncer.pid" ]; then
    local pid i
    pid=$(cat "$BOUNCER_DIR/pgbouncer.pid")
    kill -INT "$pid" 2>/dev/null
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ -n "${BOUNCER_DIR:-}" ] && rm -rf "$BOUNCER_DIR"
  BOUNCER_DIR=
}
