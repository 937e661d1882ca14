// GoogleTest of Client::once against a real server (the database and the
// cxx_work table are set up by client_test.cpp's environment, linked into the
// same binary).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "idempotency/client.hpp"
#include "test_env.hpp"

using namespace idempotency;
using namespace std::chrono_literals;

using namespace test_env;

namespace {


std::string scope_of_this_test() {
  static std::atomic<int> n{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string("cxx-once:") + info->name() + ":" + std::to_string(getpid()) + ":" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" + std::to_string(n++);
}

// A plain libpq connection playing the application.
class App {
 public:
  App() : c_(PQconnectdb(conninfo().c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(c_));
  }
  ~App() { PQfinish(c_); }
  App(const App&) = delete;
  App& operator=(const App&) = delete;
  PGconn* get() const { return c_; }
  // Runs sql; returns the first value of the first row, or "".
  std::string query(const std::string& sql, const std::string& param = {}) { return run(c_, sql, param); }

  static std::string run(PGconn* conn, const std::string& sql, const std::string& param = {}) {
    const char* values[1] = {param.c_str()};
    PGresult* r = PQexecParams(conn, sql.c_str(), param.empty() ? 0 : 1, nullptr, values, nullptr, nullptr, 0);
    const auto status = PQresultStatus(r);
    std::string out;
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      std::string msg = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error(sql + ": " + msg);
    }
    if (status == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) out = PQgetvalue(r, 0, 0);
    PQclear(r);
    return out;
  }

 private:
  PGconn* c_;
};

// The consumer's effect: one row in cxx_work.
void apply_effect(PGconn* conn, const std::string& scope) {
  App::run(conn, "INSERT INTO cxx_work (scope, note) VALUES ($1, 'effect')", scope);
}

int effects(App& app, const std::string& scope) {
  return std::stoi(app.query("SELECT count(*) FROM cxx_work WHERE scope = $1 AND note = 'effect'", scope));
}

std::string sqlstate_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.sqlstate();
  }
  return "none";
}

}  // namespace

TEST(Once, RunsTheHandlerForANewKeyOnly) {
  Client c(conninfo(), test_options());
  App app;
  const auto s = scope_of_this_test();
  int runs = 0;
  auto handler = [&](PGconn* conn) {
    ++runs;
    apply_effect(conn, s);
  };
  EXPECT_TRUE(c.once(s, "msg-1", handler));
  EXPECT_FALSE(c.once(s, "msg-1", handler));
  EXPECT_TRUE(c.once(s, "msg-2", handler));
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(effects(app, s), 2);
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  auto key = c.lookup(s, "msg-1");
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->state, KeyState::Completed);
  EXPECT_FALSE(key->response.has_value());
  EXPECT_FALSE(key->fingerprint.has_value());
}

TEST(Once, ThrowingHandlerRollsBackTheKeyAndTheWork) {
  Client c(conninfo(), test_options());
  App app;
  const auto s = scope_of_this_test();
  struct Boom : std::runtime_error {
    Boom() : std::runtime_error("boom") {}
  };
  EXPECT_THROW(c.once(s, "msg",
                      [&](PGconn* conn) {
                        apply_effect(conn, s);
                        throw Boom();
                      }),
               Boom);
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  EXPECT_EQ(effects(app, s), 0);
  EXPECT_FALSE(c.lookup(s, "msg").has_value());
  // the redelivery processes it
  EXPECT_TRUE(c.once(s, "msg", [&](PGconn* conn) { apply_effect(conn, s); }));
  EXPECT_EQ(effects(app, s), 1);
}

TEST(Once, HandlerThatBreaksTheTransactionIsAnErrorAndNothingStays) {
  Client c(conninfo(), test_options());
  App app;
  const auto s = scope_of_this_test();
  EXPECT_EQ(sqlstate_of([&] {
              c.once(s, "msg", [&](PGconn* conn) {
                apply_effect(conn, s);
                PQclear(PQexec(conn, "SELECT 1/0"));  // swallowed by the handler
              });
            }),
            "25P02");
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  EXPECT_EQ(effects(app, s), 0);
  EXPECT_FALSE(c.lookup(s, "msg").has_value());
}

TEST(Once, KeyHeldByAnOpenTransactionIs55P03NeverFalse) {
  App holder;
  Client borrowed(holder.get(), test_options());
  Client c(conninfo(), test_options());
  const auto s = scope_of_this_test();
  bool ran = false;
  holder.query("BEGIN");
  ASSERT_TRUE(borrowed.once(s, "msg", [](PGconn*) {}));
  EXPECT_EQ(sqlstate_of([&] { c.once(s, "msg", [&](PGconn*) { ran = true; }); }), "55P03");
  OnceOptions short_wait;
  short_wait.wait = 200ms;
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(sqlstate_of([&] { c.once(s, "msg", short_wait, [&](PGconn*) { ran = true; }); }), "55P03");
  EXPECT_GE(std::chrono::steady_clock::now() - started, 200ms);
  EXPECT_FALSE(ran);
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  holder.query("COMMIT");
  EXPECT_FALSE(c.once(s, "msg", [&](PGconn*) { ran = true; }));
  EXPECT_FALSE(ran);
}

TEST(Once, WaitingDuplicateAnswersForWhatTheHolderDid) {
  const auto s = scope_of_this_test();
  OnceOptions wait;
  wait.wait = 30s;
  for (const char* ending : {"COMMIT", "ROLLBACK"}) {
    App holder;
    Client borrowed(holder.get(), test_options());
    holder.query("BEGIN");
    ASSERT_TRUE(borrowed.once(s, ending, [](PGconn*) {}));
    std::thread finisher([&] {
      std::this_thread::sleep_for(300ms);
      holder.query(ending);
    });
    Client c(conninfo(), test_options());
    bool ran = false;
    const bool first = c.once(s, ending, wait, [&](PGconn*) { ran = true; });
    finisher.join();
    // committed: already processed; rolled back: this delivery is the first
    EXPECT_EQ(first, std::string(ending) == "ROLLBACK") << ending;
    EXPECT_EQ(ran, first);
  }
}

TEST(Once, BorrowedConnectionJoinsTheCallersTransaction) {
  App app;
  Client c(app.get(), test_options());
  const auto s = scope_of_this_test();
  app.query("BEGIN");
  app.query("INSERT INTO cxx_work (scope, note) VALUES ($1, 'before')", s);
  EXPECT_TRUE(c.once(s, "msg", [&](PGconn* conn) { apply_effect(conn, s); }));
  EXPECT_EQ(PQtransactionStatus(app.get()), PQTRANS_INTRANS);  // still the caller's transaction
  app.query("ROLLBACK");
  App other;
  EXPECT_EQ(effects(other, s), 0);
  EXPECT_EQ(other.query("SELECT count(*) FROM idempotency.keys WHERE scope = $1", s), "0");
  // and commits with it
  app.query("BEGIN");
  EXPECT_TRUE(c.once(s, "msg", [&](PGconn* conn) { apply_effect(conn, s); }));
  EXPECT_EQ(effects(other, s), 0);  // not yet visible
  app.query("COMMIT");
  EXPECT_EQ(effects(other, s), 1);
  EXPECT_FALSE(c.once(s, "msg", [](PGconn*) {}));
}

TEST(Once, ThrowingHandlerOnABorrowedConnectionRollsBackToTheSavepointOnly) {
  App app;
  Client c(app.get(), test_options());
  const auto s = scope_of_this_test();
  app.query("BEGIN");
  app.query("INSERT INTO cxx_work (scope, note) VALUES ($1, 'caller')", s);
  EXPECT_THROW(c.once(s, "msg",
                      [&](PGconn* conn) {
                        apply_effect(conn, s);
                        throw std::runtime_error("handler failed");
                      }),
               std::runtime_error);
  EXPECT_EQ(PQtransactionStatus(app.get()), PQTRANS_INTRANS);
  EXPECT_EQ(effects(app, s), 0);  // only the caller's row is left
  EXPECT_EQ(app.query("SELECT count(*) FROM cxx_work WHERE scope = $1 AND note = 'caller'", s), "1");
  EXPECT_TRUE(c.once(s, "msg", [&](PGconn* conn) { apply_effect(conn, s); }));
  app.query("COMMIT");
  EXPECT_EQ(effects(app, s), 1);
}

TEST(Once, FailedCallerTransactionIs25P02) {
  App app;
  Client c(app.get(), test_options());
  const auto s = scope_of_this_test();
  app.query("BEGIN");
  PQclear(PQexec(app.get(), "SELECT 1/0"));
  EXPECT_EQ(sqlstate_of([&] { c.once(s, "msg", [](PGconn*) {}); }), "25P02");
  app.query("ROLLBACK");
}

TEST(Once, BadArgumentsAreErrorsWithTheirSqlstate) {
  Client c(conninfo(), test_options());
  const auto s = scope_of_this_test();
  auto none = [](PGconn*) {};
  EXPECT_EQ(sqlstate_of([&] { c.once(s, "", none); }), "22023");
  EXPECT_EQ(sqlstate_of([&] { c.once(s, std::string(256, 'k'), none); }), "22023");
  OnceOptions bad_ttl;
  bad_ttl.ttl = 0ms;
  EXPECT_EQ(sqlstate_of([&] { c.once(s, "k", bad_ttl, none); }), "22023");
  OnceOptions bad_wait;
  bad_wait.wait = -1ms;
  EXPECT_EQ(sqlstate_of([&] { c.once(s, "k", bad_wait, none); }), "22023");
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  EXPECT_FALSE(c.lookup(s, "k").has_value());
}

TEST(Once, TtlOptionSetsTheExpiry) {
  Client c(conninfo(), test_options());
  const auto s = scope_of_this_test();
  OnceOptions o;
  o.ttl = 2h;
  ASSERT_TRUE(c.once(s, "k", o, [](PGconn*) {}));
  auto key = c.lookup(s, "k");
  ASSERT_TRUE(key && key->expires_at && key->created_at);
  EXPECT_EQ(*key->expires_at - *key->created_at, std::chrono::hours(2));
}

// Real parallel consumers on their own connections, each key delivered to
// every one of them at once: exactly one handler run per key.
TEST(Once, ParallelDuplicateDeliveriesApplyEachEffectOnce) {
  const auto s = scope_of_this_test();
  constexpr int kConsumers = 6, kKeys = 40;
  std::atomic<int> runs{0}, duplicates{0}, held{0};
  std::vector<std::thread> consumers;
  for (int t = 0; t < kConsumers; ++t) {
    consumers.emplace_back([&] {
      Client c(conninfo(), test_options());
      OnceOptions o;
      o.wait = 10s;
      for (int k = 0; k < kKeys; ++k) {
        try {
          if (c.once(s, "msg-" + std::to_string(k), o, [&](PGconn* conn) {
                apply_effect(conn, s);
                ++runs;
              }))
            continue;
          ++duplicates;
        } catch (const Error& e) {
          if (e.sqlstate() != "55P03") throw;
          ++held;
        }
      }
    });
  }
  for (auto& t : consumers) t.join();
  App app;
  EXPECT_EQ(runs.load(), kKeys);
  EXPECT_EQ(effects(app, s), kKeys);
  EXPECT_EQ(held.load(), 0);  // a 10 s wait always sees the first delivery end
  EXPECT_EQ(duplicates.load(), kKeys * (kConsumers - 1));
}
