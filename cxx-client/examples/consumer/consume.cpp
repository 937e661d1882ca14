// consume: one member of the consumer group. Per message:
//   BEGIN; once('consumer:payments', <business id>); INSERT INTO demo.ledger; COMMIT;  then XACK
// (Client::once runs the BEGIN ... COMMIT). The broker delivers at least once:
// a message is acknowledged only after its transaction committed, so a crash
// anywhere leaves it pending, and another consumer takes it over with
// XAUTOCLAIM; once() answers false for what was already applied.
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "consumer.hpp"
#include "idempotency/client.hpp"
#include "redis.hpp"

namespace demo {

namespace {

using Clock = std::chrono::steady_clock;

// Runs one statement with text parameters on conn; returns the first value.
std::string sql(PGconn* conn, const char* statement, std::initializer_list<std::string> params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  PGresult* r =
      PQexecParams(conn, statement, static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0);
  const auto status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error(message);
  }
  std::string out = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return out;
}

idempotency::ClientOptions client_options(const Options& o) {
  idempotency::ClientOptions c;
  c.pooler = o.pooler;
  return c;
}

class Consumer {
 public:
  explicit Consumer(const Options& o) : o_(o), redis_(o.redis_host, o.redis_port), db_(o.db, client_options(o)) {
    once_options_.wait = std::chrono::milliseconds(o.wait_ms);
  }

  int run() {
    // After a restart under the same name: our own pending entries first.
    for (const auto& e : own_pending()) process(e, true);
    const auto deadline = Clock::now() + std::chrono::minutes(5);  // never loop forever
    while (Clock::now() < deadline) {
      const int taken = take_over_idle();
      const int fresh = read_new();
      if (taken == 0 && fresh == 0 && finished()) {
        std::cout << o_.name << ": done: " << applied_ << " applied, " << duplicates_ << " duplicates skipped, "
                  << held_ << " held by another consumer (left pending), " << taken_total_
                  << " taken over with XAUTOCLAIM\n";
        return 0;
      }
    }
    std::cerr << o_.name << ": gave up after 5 minutes\n";
    return 2;
  }

 private:
  // XREADGROUP's reply [[stream, [entries...]]] (nil when nothing came).
  static std::vector<StreamEntry> group_entries(const Reply& r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return {};
    const redisReply* stream = r->element[0];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements < 2) return {};
    return Redis::entries(stream->element[1]);
  }

  std::vector<StreamEntry> own_pending() {
    return group_entries(
        redis_.command({"XREADGROUP", "GROUP", o_.group, o_.name, "COUNT", "1000", "STREAMS", o_.stream, "0"}));
  }

  int read_new() {
    const auto entries = group_entries(redis_.command(
        {"XREADGROUP", "GROUP", o_.group, o_.name, "COUNT", "10", "BLOCK", "200", "STREAMS", o_.stream, ">"}));
    for (const auto& e : entries) process(e, false);
    return static_cast<int>(entries.size());
  }

  // Entries another consumer received but did not acknowledge for
  // min_idle_ms: it crashed (or a delivery was held); they are ours now.
  int take_over_idle() {
    int taken = 0;
    std::string cursor = "0-0";
    do {
      Reply r = redis_.command(
          {"XAUTOCLAIM", o_.stream, o_.group, o_.name, std::to_string(o_.min_idle_ms), cursor, "COUNT", "50"});
      cursor = std::string(r->element[0]->str, r->element[0]->len);
      const auto entries = Redis::entries(r->element[1]);
      for (const auto& e : entries) process(e, true);
      taken += static_cast<int>(entries.size());
    } while (cursor != "0-0");
    taken_total_ += taken;
    return taken;
  }

  // Everything published was delivered and acknowledged.
  bool finished() {
    if (redis_.integer({"EXISTS", done_key(o_)}) == 0) return false;
    Reply pending = redis_.command({"XPENDING", o_.stream, o_.group});
    return pending->type == REDIS_REPLY_ARRAY && pending->elements > 0 && pending->element[0]->integer == 0;
  }

  void process(const StreamEntry& e, bool redelivery) {
    const std::string id = e.field("id");
    PGconn* conn = db_.connection();
    try {
      const std::string delivery = sql(conn,
                                       "INSERT INTO demo.deliveries (stream_id, business_id, consumer, redelivery)"
                                       " VALUES ($1, $2, $3, $4) RETURNING delivery",
                                       {e.id, id, o_.name, redelivery ? "true" : "false"});
      bool applied = false;
      try {
        applied = db_.once(kScope, id, once_options_, [&](PGconn* tx) {
          // The effect, in the transaction that records the key.
          sql(tx, "INSERT INTO demo.ledger (business_id, amount, consumer, stream_id) VALUES ($1, $2, $3, $4)",
              {id, e.field("amount"), o_.name, e.id});
          sql(tx, "UPDATE demo.deliveries SET outcome = 'applied' WHERE delivery = $1", {delivery});
        });
      } catch (const idempotency::Error& err) {
        if (err.sqlstate() != "55P03") throw;
        // Another consumer's transaction holds this id and may still roll
        // back: not acknowledged, so the message stays pending and comes back.
        sql(conn, "UPDATE demo.deliveries SET outcome = 'held' WHERE delivery = $1", {delivery});
        ++held_;
        return;
      }
      if (applied) {
        ++applied_;
        if (o_.crash_after_commit > 0 && applied_ == o_.crash_after_commit) {
          std::fprintf(stderr, "%s: SIGKILL right after the COMMIT of %s (stream entry %s), before its XACK\n",
                       o_.name.c_str(), id.c_str(), e.id.c_str());
          std::fflush(stderr);
          kill(getpid(), SIGKILL);
        }
      } else {
        ++duplicates_;
        sql(conn, "UPDATE demo.deliveries SET outcome = 'duplicate' WHERE delivery = $1", {delivery});
      }
      redis_.command({"XACK", o_.stream, o_.group, e.id});
    } catch (const std::exception& err) {
      // Not acknowledged: the message stays pending and is delivered again.
      std::cerr << o_.name << ": " << e.id << " (" << id << ") not processed: " << err.what() << "\n";
    }
  }

  const Options& o_;
  Redis redis_;
  idempotency::Client db_;
  idempotency::OnceOptions once_options_;
  long long applied_ = 0, duplicates_ = 0, held_ = 0, taken_total_ = 0;
};

}  // namespace

int consume(const Options& o) {
  try {
    Consumer consumer(o);
    return consumer.run();
  } catch (const std::exception& e) {
    std::cerr << o.name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace demo
