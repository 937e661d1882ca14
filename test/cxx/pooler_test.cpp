// The client's pooler mode, pooler detection and execute()'s pipelining.
// Connection: libpq's PG* environment; database idempotency_cxx_test (or
// IDEMPOTENCY_TEST_DB), created by whichever test binary gets there first.
//
// Two groups:
//  * Direct.*: on a direct connection (skipped when IDEMPOTENCY_TEST_POOLER=1):
//    unnamed statements leave nothing on the connection; a named statement
//    that goes missing (26000) or is already there (42P05), as behind a
//    transaction pooler, switches the Client to pooler mode without ever
//    running a handler twice.
//  * ThroughPooler.*: only with IDEMPOTENCY_TEST_POOLER=1, which
//    scripts/suites/80-pooler.sh sets when PG* points at PgBouncer in
//    transaction mode with at least 2 server connections for this database.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "idempotency/client.hpp"
#include "test_env.hpp"

using namespace idempotency;
using namespace std::chrono_literals;

using namespace test_env;

namespace {


// Runs sql on conn with text parameters; returns the first value ("" if none)
// and throws on an error.
std::string query(PGconn* conn, const std::string& sql, std::vector<std::string> params = {}) {
  std::vector<const char*> v;
  for (auto& p : params) v.push_back(p.c_str());
  PGresult* r = PQexecParams(conn, sql.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0);
  const auto st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string msg = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error(sql + ": " + msg);
  }
  std::string out = st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return out;
}

class Conn {
 public:
  explicit Conn(const std::string& ci = conninfo()) : c_(PQconnectdb(ci.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) throw std::runtime_error(std::string("connect: ") + PQerrorMessage(c_));
  }
  ~Conn() { PQfinish(c_); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  PGconn* get() const { return c_; }
  std::string query(const std::string& sql, std::vector<std::string> params = {}) {
    return ::query(c_, sql, std::move(params));
  }

 private:
  PGconn* c_;
};

class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    {
      Conn admin("dbname=postgres");
      if (admin.query("SELECT 1 FROM pg_database WHERE datname = $1", {db_name()}).empty()) {
        try {
          admin.query("CREATE DATABASE " + db_name());
        } catch (const std::exception&) {  // another test binary won the race
        }
      }
    }
    Conn c;
    for (int i = 0; i < 5; ++i) {
      try {
        c.query("CREATE EXTENSION IF NOT EXISTS pg_idempotency");
        c.query("CREATE TABLE IF NOT EXISTS cxx_pooler_work (scope text NOT NULL, key text NOT NULL)");
        break;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(100ms);
      }
    }
  }
};
[[maybe_unused]] auto* const g_env = ::testing::AddGlobalTestEnvironment(new Env);

std::string unique_scope() {
  static std::atomic<int> n{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string("pooler:") + info->name() + ":" + std::to_string(getpid()) + ":" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" + std::to_string(n++);
}

int prepared_statements(PGconn* conn) {
  return std::stoi(query(conn, "SELECT count(*) FROM pg_catalog.pg_prepared_statements"));
}

#define EXPECT_SQLSTATE(statement, state)                                         \
  do {                                                                            \
    try {                                                                         \
      statement;                                                                  \
      ADD_FAILURE() << #statement << ": no error, expected SQLSTATE " << (state); \
    } catch (const idempotency::Error& e_) {                                      \
      EXPECT_EQ(e_.sqlstate(), (state)) << #statement << ": " << e_.what();       \
    }                                                                             \
  } while (0)

#define DIRECT_ONLY() \
  if (pooled()) GTEST_SKIP() << "needs a direct connection"
#define POOLER_ONLY() \
  if (!pooled()) GTEST_SKIP() << "runs through PgBouncer only (scripts/suites/80-pooler.sh)"

ClientOptions pooler_options(bool pipeline = true) {
  ClientOptions o;
  o.pooler = true;
  o.pipeline = pipeline;
  return o;
}

Response ok(std::string body = "done") { return Response{201, std::move(body), ""}; }

}  // namespace

// ---- on a direct connection ------------------------------------------------------

TEST(Direct, PoolerModeKeepsNothingOnTheConnection) {
  DIRECT_ONLY();
  for (bool pipeline : {true, false}) {
    Client c(conninfo(), pooler_options(pipeline));
    EXPECT_TRUE(c.pooler_mode());
    const auto s = unique_scope();
    ClaimOptions fp;
    fp.fingerprint = std::string("\x00\x01 fp", 5);
    auto r = c.claim(s, "a", fp);
    ASSERT_TRUE(r.claimed());
    EXPECT_EQ(r.attempt, 1);
    ASSERT_TRUE(r.expires_at.has_value());
    ASSERT_TRUE(r.locked_until.has_value());
    EXPECT_TRUE(c.checkpoint(s, "a", *r.token, "step 1") > Clock::now() - 1min);
    EXPECT_TRUE(c.finish(s, "a", *r.token, Response{200, std::string("b\0dy", 4), R"({"X-A": "1"})"}));
    auto replay = c.claim(s, "a", fp);
    ASSERT_EQ(replay.outcome, Outcome::Replay);
    EXPECT_EQ(replay.response->body, std::string("b\0dy", 4));
    EXPECT_EQ(replay.response->headers_json, R"({"X-A": "1"})");
    EXPECT_EQ(replay.recovery_point, "step 1");
    fp.fingerprint = "other";
    EXPECT_EQ(c.claim(s, "a", fp).outcome, Outcome::Mismatch);
    auto j = c.claim_json(s, "j", R"({"b": 1, "a": [1, 2]})");
    ASSERT_TRUE(j.claimed());
    EXPECT_TRUE(c.release(s, "j", *j.token));
    EXPECT_EQ(c.lookup(s, "a")->state, KeyState::Completed);
    int runs = 0;
    auto e = c.execute_json(s, "e", R"({"x": 1})", [&](PGconn* conn) {
      ++runs;
      query(conn, "INSERT INTO cxx_pooler_work VALUES ($1, 'e')", {s});
      return ok();
    });
    EXPECT_TRUE(e.claimed());
    EXPECT_EQ(c.execute_json(s, "e", R"({ "x" : 1 })", [&](PGconn*) { return ++runs, ok(); }).outcome, Outcome::Replay);
    EXPECT_EQ(runs, 1);
    EXPECT_SQLSTATE(c.finish(s, "a", 42, ok()), "IK001");
    EXPECT_EQ(prepared_statements(c.connection()), 0) << "pipeline " << pipeline;
  }
}

TEST(Direct, PreparedModeIsTheDefaultAndPreparesOnce) {
  DIRECT_ONLY();
  Client c(conninfo());
  EXPECT_FALSE(c.pooler_mode());
  EXPECT_TRUE(c.options().pipeline);
  const auto s = unique_scope();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(c.execute(s, "k" + std::to_string(i), std::nullopt, [](PGconn*) { return ok(); }).claimed());
  }
  EXPECT_EQ(prepared_statements(c.connection()), 9);  // every statement of the client, as one unit
  EXPECT_FALSE(c.pooler_mode());
}

// The statements are prepared as one unit, whatever the first call needs, so
// that no server connection behind a pooler holds claim without finish: a
// Client whose first execute() is a replay (no finish) prepares finish too,
// and so does a first claim() or once() outside any transaction.
TEST(Direct, TheFirstCallPreparesEveryStatement) {
  DIRECT_ONLY();
  const auto s = unique_scope();
  {
    Client first(conninfo());
    ASSERT_TRUE(first.execute(s, "done", std::nullopt, [](PGconn*) { return ok(); }).claimed());
  }
  for (int how = 0; how < 4; ++how) {
    ClientOptions o;
    o.pipeline = how % 2 == 0;
    Client c(conninfo(), o);
    if (how < 2) {
      EXPECT_EQ(c.execute(s, "done", std::nullopt, [](PGconn*) { return ok(); }).outcome, Outcome::Replay);
    } else {
      EXPECT_EQ(c.claim(s, "done").outcome, Outcome::Replay);
    }
    EXPECT_EQ(query(c.connection(),
                    "SELECT string_agg(name, ' ' ORDER BY name COLLATE \"C\") FROM pg_catalog.pg_prepared_statements"),
              "idempotency_v2_checkpoint idempotency_v2_claim idempotency_v2_claim_json idempotency_v2_fingerprint "
              "idempotency_v2_finish idempotency_v2_lookup idempotency_v2_once idempotency_v2_release "
              "idempotency_v2_sweep")
        << "pipeline " << o.pipeline << (how < 2 ? ", execute" : ", claim");
    EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
    EXPECT_FALSE(c.pooler_mode());
  }
}

TEST(Direct, MissingStatementAtExecuteStartSwitchesAndRunsTheHandlerOnce) {
  DIRECT_ONLY();
  for (bool pipeline : {true, false}) {
    ClientOptions o;
    o.pipeline = pipeline;
    Client c(conninfo(), o);
    const auto s = unique_scope();
    ASSERT_TRUE(c.execute(s, "first", std::nullopt, [](PGconn*) { return ok(); }).claimed());
    // What a transaction pooler does to us: the next transaction runs on a
    // server connection that has never seen our statements.
    query(c.connection(), "DEALLOCATE ALL");
    int runs = 0;
    auto r = c.execute(s, "second", std::nullopt, [&](PGconn* conn) {
      ++runs;
      query(conn, "INSERT INTO cxx_pooler_work VALUES ($1, 'second')", {s});
      return ok();
    });
    EXPECT_TRUE(r.claimed());
    EXPECT_EQ(runs, 1);
    EXPECT_TRUE(c.pooler_mode());
    EXPECT_EQ(query(c.connection(), "SELECT count(*) FROM cxx_pooler_work WHERE scope = $1", {s}), "1");
    EXPECT_EQ(c.lookup(s, "second")->state, KeyState::Completed);
  }
}

TEST(Direct, StatementAlreadyThereSwitchesToo) {
  DIRECT_ONLY();
  for (bool in_execute : {false, true}) {
    Client c(conninfo());
    // Another client's statement of the same name on "our" server connection.
    query(c.connection(), "PREPARE idempotency_v2_claim AS SELECT 1");
    const auto s = unique_scope();
    int runs = 0;
    ClaimResult r =
        in_execute ? c.execute(s, "k", std::nullopt, [&](PGconn*) { return ++runs, ok(); }) : c.claim(s, "k");
    EXPECT_TRUE(r.claimed());
    EXPECT_EQ(runs, in_execute ? 1 : 0);
    EXPECT_TRUE(c.pooler_mode());
  }
}

TEST(Direct, MissingStatementAfterTheHandlerIsAnErrorNeverASecondRun) {
  DIRECT_ONLY();
  for (bool pipeline : {true, false}) {
    ClientOptions o;
    o.pipeline = pipeline;
    Client c(conninfo(), o);
    const auto s = unique_scope();
    ASSERT_TRUE(c.execute(s, "first", std::nullopt, [](PGconn*) { return ok(); }).claimed());
    int runs = 0;
    EXPECT_SQLSTATE(c.execute(s, "k", std::nullopt,
                              [&](PGconn* conn) {
                                ++runs;
                                query(conn, "INSERT INTO cxx_pooler_work VALUES ($1, 'k')", {s});
                                query(conn, "DEALLOCATE idempotency_v2_finish");  // finish is gone now
                                return ok();
                              }),
                    "26000");
    EXPECT_EQ(runs, 1);
    EXPECT_TRUE(c.pooler_mode());
    // Rolled back as a whole: the work and the key.
    EXPECT_EQ(query(c.connection(), "SELECT count(*) FROM cxx_pooler_work WHERE scope = $1", {s}), "0");
    EXPECT_FALSE(c.lookup(s, "k").has_value());
    EXPECT_TRUE(c.execute(s, "k", std::nullopt, [&](PGconn*) { return ++runs, ok(); }).claimed());
    EXPECT_EQ(runs, 2);
  }
}

TEST(Direct, InsideTheCallersTransactionAMissingStatementIsAnError) {
  DIRECT_ONLY();
  Conn caller;
  Client c(caller.get());
  const auto s = unique_scope();
  ASSERT_TRUE(c.claim(s, "a").claimed());  // prepares claim (autocommit)
  caller.query("DEALLOCATE ALL");
  caller.query("BEGIN");
  caller.query("INSERT INTO cxx_pooler_work VALUES ($1, 'caller')", {s});
  // The caller's transaction has failed: no retry could bring its work back.
  EXPECT_SQLSTATE(c.claim(s, "b"), "26000");
  EXPECT_EQ(PQtransactionStatus(caller.get()), PQTRANS_INERROR);
  caller.query("ROLLBACK");
  EXPECT_TRUE(c.pooler_mode());
  EXPECT_TRUE(c.claim(s, "b").claimed());
}

TEST(Direct, DetectionOffKeepsPreparedStatements) {
  DIRECT_ONLY();
  ClientOptions o;
  o.detect_pooler = false;
  Client c(conninfo(), o);
  const auto s = unique_scope();
  ASSERT_TRUE(c.claim(s, "a").claimed());
  query(c.connection(), "DISCARD ALL");
  EXPECT_TRUE(c.claim(s, "b").claimed());  // prepared again (outside a transaction)
  EXPECT_FALSE(c.pooler_mode());
  EXPECT_GE(prepared_statements(c.connection()), 1);
}

TEST(Direct, PipelinedExecuteRollsBackOnAFailedFinish) {
  DIRECT_ONLY();
  for (bool pooler : {false, true}) {
    ClientOptions o;
    o.pooler = pooler;
    Client c(conninfo(), o);
    const auto s = unique_scope();
    // A response too large for idempotency.max_response_size fails finish,
    // which the pipeline sends together with COMMIT.
    query(c.connection(), "SET idempotency.max_response_size = 1024");
    EXPECT_SQLSTATE(c.execute(s, "k", std::nullopt,
                              [&](PGconn* conn) {
                                query(conn, "INSERT INTO cxx_pooler_work VALUES ($1, 'k')", {s});
                                return ok(std::string(4096, 'x'));
                              }),
                    "54000");
    EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
    EXPECT_EQ(query(c.connection(), "SELECT count(*) FROM cxx_pooler_work WHERE scope = $1", {s}), "0");
    EXPECT_FALSE(c.lookup(s, "k").has_value());
  }
}

// ---- through PgBouncer in transaction mode --------------------------------------------

// execute() pipelines BEGIN + claim and finish + COMMIT: all of it, and the
// handler, must be one transaction on one server connection, whatever the
// pooler does between transactions.
TEST(ThroughPooler, ClaimHandlerAndFinishShareOneTransactionOnOneServerConnection) {
  POOLER_ONLY();
  const auto s = unique_scope();
  const int threads = 8, keys = 25;
  std::mutex mu;
  std::map<std::string, std::pair<std::string, std::string>> seen;  // key -> (backend pid, xid)
  std::atomic<int> clients_on_several_servers{0}, failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        Client c(conninfo(), pooler_options());
        std::set<std::string> pids;
        for (int k = 0; k < keys; ++k) {
          const std::string key = "t" + std::to_string(t) + "-" + std::to_string(k);
          auto r = c.execute(s, key, std::nullopt, [&](PGconn* conn) {
            const std::string pid = query(conn, "SELECT pg_backend_pid()");
            const std::string xid = query(conn, "SELECT pg_catalog.txid_current() % 4294967296");
            // The claim's row was written by this very transaction.
            const std::string row_xmin =
                query(conn, "SELECT xmin::text FROM idempotency.keys WHERE scope = $1 AND key = $2", {s, key});
            if (row_xmin != xid) ++failures;
            query(conn, "INSERT INTO cxx_pooler_work VALUES ($1, $2)", {s, key});
            pids.insert(pid);
            std::lock_guard<std::mutex> g(mu);
            seen[key] = {pid, xid};
            return ok(pid);
          });
          if (!r.claimed()) ++failures;
        }
        if (pids.size() > 1) ++clients_on_several_servers;
      } catch (const std::exception& e) {
        ++failures;
        ADD_FAILURE() << e.what();
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(threads * keys));
  Conn check;
  for (const auto& [key, where] : seen) {
    // finish ran in the same transaction: the completed row's xmin is its xid.
    EXPECT_EQ(check.query("SELECT xmin::text FROM idempotency.keys WHERE scope = $1 AND key = $2", {s, key}),
              where.second)
        << key;
  }
  EXPECT_EQ(check.query("SELECT count(*) FROM cxx_pooler_work WHERE scope = $1", {s}), std::to_string(threads * keys));
  // The pooler did move clients between server connections.
  EXPECT_GT(clients_on_several_servers.load(), 0);
}

// A multi-step operation: claim and commit, a checkpoint in another
// transaction, finish in a third, each on a different server connection. The
// state is all in the table and the token fences it.
TEST(ThroughPooler, MultiStepOperationAcrossServerConnections) {
  POOLER_ONLY();
  const auto s = unique_scope();
  Client worker(conninfo(), pooler_options());
  auto step_pid = [&] { return query(worker.connection(), "SELECT pg_backend_pid()"); };
  // Holds the server connection `avoid` (the worker's last one) in an open
  // transaction, so that the worker's next transaction must run on another.
  // Every BEGIN takes an idle server connection and `avoid` is idle: pinning
  // the others one by one reaches it.
  auto pin_server = [&](const std::string& avoid) -> std::unique_ptr<Conn> {
    std::vector<std::unique_ptr<Conn>> others;
    for (int i = 0; i < 16; ++i) {
      auto c = std::make_unique<Conn>();
      c->query("BEGIN");
      if (c->query("SELECT pg_backend_pid()") == avoid) {
        for (auto& o : others) o->query("COMMIT");
        return c;
      }
      others.push_back(std::move(c));
    }
    return nullptr;
  };

  auto claimed = worker.claim(s, "op", {});  // autocommit: claim and commit
  ASSERT_TRUE(claimed.claimed());
  const std::string p1 = step_pid();
  auto pin = pin_server(p1);
  ASSERT_TRUE(pin) << "could not pin server connection " << p1;

  worker.checkpoint(s, "op", *claimed.token, "charged card");
  const std::string p2 = step_pid();
  EXPECT_NE(p2, p1);
  pin.reset();
  pin = pin_server(p2);
  ASSERT_TRUE(pin) << "could not pin server connection " << p2;

  // A stale token (a "crashed earlier attempt") is refused on any server.
  EXPECT_SQLSTATE(worker.finish(s, "op", *claimed.token + 1, ok("stale")), "IK001");
  EXPECT_TRUE(worker.finish(s, "op", *claimed.token, ok("done after 3 transactions")));
  const std::string p3 = step_pid();
  EXPECT_NE(p3, p2);
  pin.reset();

  auto replay = worker.claim(s, "op");
  ASSERT_EQ(replay.outcome, Outcome::Replay);
  EXPECT_EQ(replay.response->body, "done after 3 transactions");
  EXPECT_EQ(replay.recovery_point, "charged card");
}

// Prepared mode (the default) through a transaction pooler: no call fails
// (the statements go to a server connection as one unit, so a transaction
// that found claim there finds finish too; one that finds none fails before
// its handler and starts over unnamed), no handler's work commits twice and
// every key ends up done. Detection moves some Clients to unnamed statements;
// behind PgBouncer's max_prepared_statements none needs to move.
TEST(ThroughPooler, DefaultClientsDetectThePoolerAndKeepExactlyOnce) {
  POOLER_ONLY();
  const auto s = unique_scope();
  const int threads = 6, keys = 20;
  std::vector<std::atomic<int>> runs(keys), rolled_back(keys);
  std::atomic<int> errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      Client c(conninfo());  // no options: prepared statements at first
      for (int round = 0; round < 2; ++round) {
        for (int k = 0; k < keys; ++k) {
          const std::string key = "k" + std::to_string(k);
          bool ran = false;
          try {
            ClaimOptions o;
            o.wait = 5s;
            c.execute(s, key, o, [&](PGconn* conn) {
              ran = true;
              runs[k]++;
              query(conn, "INSERT INTO cxx_pooler_work VALUES ($1, $2)", {s, key});
              return ok();
            });
          } catch (const Error& e) {
            ++errors;
            ADD_FAILURE() << key << ": " << e.what();
            if (ran) rolled_back[k]++;
          }
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(errors.load(), 0);
  Client check(conninfo(), pooler_options());
  for (int k = 0; k < keys; ++k) {
    const std::string key = "k" + std::to_string(k);
    auto rec = check.lookup(s, key);
    ASSERT_TRUE(rec.has_value()) << key;
    EXPECT_EQ(rec->state, KeyState::Completed) << key;
    EXPECT_EQ(runs[k].load() - rolled_back[k].load(), 1) << key;
    EXPECT_EQ(query(check.connection(), "SELECT count(*) FROM cxx_pooler_work WHERE scope = $1 AND key = $2", {s, key}),
              "1")
        << key;
  }
}
