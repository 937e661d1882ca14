# The Redis Streams consumer scenario, shared by scripts/demo --consumer and
# the test suite 50-consumer. Source it after common.sh, with a cluster
# running (PGHOST/PGPORT/PGUSER exported); it defines functions only.
#
# consumer_scenario COUNT DUPLICATE_EVERY
#   A redis-server of its own (loopback, private port, temp dir, no
#   persistence), database idempotency_consumer_demo, a producer publishing
#   COUNT payments (every DUPLICATE_EVERY-th twice), three consumers in one
#   group: c3 SIGKILLs itself right after a COMMIT and before its XACK; c1 is
#   killed with kill -9 at an arbitrary moment mid-stream and restarted under
#   the same name (as a supervisor would). Prints each consumer's summary and
#   the report, whose last line is the verdict; returns its exit status.
#   Stops everything it started.

CONSUMER_BIN=${CONSUMER_BIN:-$BUILD_DIR/idempotency-demo-consumer}
CONSUMER_DB=idempotency_consumer_demo

_scenario_pids=()
_redis_pid=
_redis_dir=

_scenario_stop() {
  local pid
  for pid in "${_scenario_pids[@]}"; do
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  _scenario_pids=()
  if [ -n "$_redis_pid" ]; then
    kill "$_redis_pid" 2>/dev/null
    wait "$_redis_pid" 2>/dev/null
    SCENARIO_STOPPED_REDIS_PID=$_redis_pid
    _redis_pid=
  fi
  [ -n "$_redis_dir" ] && rm -rf "$_redis_dir"
  _redis_dir=
}

_scenario_sql() { "$PG_BIN/psql" -X -q -At -d "$CONSUMER_DB" -c "$1" 2>/dev/null; }

consumer_scenario() {
  local count=$1 duplicate_every=$2
  if [ ! -x "$CONSUMER_BIN" ]; then
    echo "$CONSUMER_BIN is missing (is libhiredis-dev installed?)" >&2
    return 1
  fi
  _redis_dir=$(mktemp -d /tmp/pg_idempotency-redis.XXXXXX)
  local redis_port
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$_redis_dir" --save '' --appendonly no \
    --daemonize no --logfile "$_redis_dir/redis.log" &
  _redis_pid=$!
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 || { echo "redis-server did not start" >&2; cat "$_redis_dir/redis.log" >&2; _scenario_stop; return 1; }
  log "redis-server on 127.0.0.1:$redis_port (no persistence)"

  "$PG_BIN/dropdb" --if-exists "$CONSUMER_DB" >/dev/null 2>&1
  "$PG_BIN/createdb" "$CONSUMER_DB" || { _scenario_stop; return 1; }
  local common=(--redis "127.0.0.1:$redis_port" --db "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$CONSUMER_DB")
  # CONSUMER_CONNINFO (+ CONSUMER_FLAGS, e.g. --pooler): the consumers' database
  # connection, e.g. through PgBouncer (scripts/suites/80-pooler.sh).
  [ -n "${CONSUMER_CONNINFO:-}" ] && common=(--redis "127.0.0.1:$redis_port" --db "$CONSUMER_CONNINFO dbname=$CONSUMER_DB" ${CONSUMER_FLAGS:-})
  local logs=$_redis_dir
  "$CONSUMER_BIN" setup "${common[@]}" || { _scenario_stop; return 1; }

  # Short idle time before a crashed consumer's entries are taken over, so
  # the scenario finishes quickly; once()'s wait stays below it.
  local consume=("$CONSUMER_BIN" consume "${common[@]}" --min-idle-ms 1500 --wait-ms 500)
  "$CONSUMER_BIN" produce "${common[@]}" --count "$count" --duplicate-every "$duplicate_every" \
    --batch 50 --pause-ms 25 >"$logs/producer.log" 2>&1 &
  local producer=$!
  _scenario_pids+=("$producer")
  "${consume[@]}" --name c1 >"$logs/c1.log" 2>&1 &
  local c1=$!
  "${consume[@]}" --name c2 >"$logs/c2.log" 2>&1 &
  local c2=$!
  # (in a subshell whose stderr is closed, so that the shell's "Killed"
  # notice for c3's SIGKILL stays out of the output; c3.log has its own line)
  { "${consume[@]}" --name c3 --crash-after-commit $((count / 20 > 0 ? count / 20 : 1)) >"$logs/c3.log" 2>&1; } 2>/dev/null &
  local c3=$!
  _scenario_pids+=("$c1" "$c2" "$c3")

  # kill -9 c1 mid-stream, at whatever it is doing (reading, in a transaction,
  # between COMMIT and XACK), once a third of the payments are applied.
  local applied=0
  for _ in $(seq 1 600); do
    applied=$(_scenario_sql "SELECT count(*) FROM demo.ledger")
    [ "${applied:-0}" -ge $((count / 3)) ] && break
    sleep 0.05
  done
  kill -9 "$c1"
  { wait "$c1"; } 2>/dev/null
  local pending_c1
  pending_c1=$(redis-cli -h 127.0.0.1 -p "$redis_port" XPENDING payments ledger - + 1000 c1 | awk 'NR % 4 == 1' | grep -c -- '-')
  echo "c1: killed with kill -9 after $applied payments were applied overall, entries delivered to it and not acknowledged: $pending_c1; restarted under the same name" >>"$logs/kill.log"
  sleep 0.3
  "${consume[@]}" --name c1 >>"$logs/c1.log" 2>&1 &  # restarted by its supervisor
  c1=$!
  _scenario_pids+=("$c1")

  local rc=0 pid
  wait "$producer" || rc=1
  for pid in "$c1" "$c2" "$c3"; do wait "$pid"; done
  _scenario_pids=()
  echo
  cat "$logs/producer.log" "$logs/kill.log"
  grep -h -E 'SIGKILL|done:|not processed|gave up' "$logs/c1.log" "$logs/c2.log" "$logs/c3.log" | head -20
  "$CONSUMER_BIN" report "${common[@]}" || rc=1
  _scenario_stop
  return $rc
}
