// setup: the demo's tables and the consumer group, made once before the
// producer and the consumers start (so that concurrent consumers never race
// on CREATE TABLE).
#include <libpq-fe.h>

#include <iostream>

#include "consumer.hpp"
#include "redis.hpp"

namespace demo {

namespace {
const char* const kSchema[] = {
    "SET client_min_messages = warning",
    "CREATE EXTENSION IF NOT EXISTS pg_idempotency",
    "CREATE SCHEMA IF NOT EXISTS demo",
    // The effect of a payment message. Deliberately no unique constraint on
    // business_id: once() is what keeps it to one row per payment.
    "CREATE TABLE IF NOT EXISTS demo.ledger ("
    "  entry bigserial PRIMARY KEY, business_id text NOT NULL, amount bigint NOT NULL,"
    "  consumer text NOT NULL, stream_id text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    // Every delivery a consumer received, written before it processes the
    // message; outcome is set with the effect (applied) or after once()
    // answered (duplicate, held). NULL: the consumer died before that.
    "CREATE TABLE IF NOT EXISTS demo.deliveries ("
    "  delivery bigserial PRIMARY KEY, stream_id text NOT NULL, business_id text NOT NULL,"
    "  consumer text NOT NULL, redelivery boolean NOT NULL, outcome text,"
    "  delivered_at timestamptz NOT NULL DEFAULT clock_timestamp())",
};
}  // namespace

int setup(const Options& o) {
  PGconn* conn = PQconnectdb(o.db.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::cerr << "setup: cannot connect: " << PQerrorMessage(conn);
    PQfinish(conn);
    return 1;
  }
  for (const char* sql : kSchema) {
    PGresult* r = PQexec(conn, sql);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) std::cerr << "setup: " << sql << ": " << PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) {
      PQfinish(conn);
      return 1;
    }
  }
  PQfinish(conn);

  Redis redis(o.redis_host, o.redis_port);
  try {
    // From the stream's start: entries published before a consumer joins count too.
    redis.command({"XGROUP", "CREATE", o.stream, o.group, "0", "MKSTREAM"});
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find("BUSYGROUP") == std::string::npos) throw;
  }
  std::cout << "setup: demo.ledger, demo.deliveries and consumer group " << o.group << " on stream " << o.stream
            << " ready\n";
  return 0;
}

}  // namespace demo
