// The libpqxx adaptor (<idempotency/pqxx.hpp>) against a real server.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "idempotency/pqxx.hpp"
#include "test_env.hpp"

using namespace idempotency;

using namespace test_env;

namespace {
std::string unique_scope() {
  static std::atomic<int> n{0};
  return "pqxx:" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ":" +
         std::to_string(getpid()) + ":" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) +
         ":" + std::to_string(n++);
}
// The database and the extension are made by client_test's environment when
// the suites share a database; make sure here too.
class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    try {
      pqxx::connection admin("dbname=postgres");
      pqxx::nontransaction n(admin);
      const std::string db = conninfo().substr(7);
      if (pqxx_detail::exec(n, "SELECT 1 FROM pg_database WHERE datname = $1", db).empty()) {
        try {
          n.exec("CREATE DATABASE " + db);
        } catch (const pqxx::sql_error&) {  // a parallel test was first
        }
      }
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
    }
    for (int i = 0; i < 5; ++i) {
      try {
        pqxx::connection c(conninfo());
        pqxx::nontransaction n(c);
        n.exec("SET client_min_messages = warning");
        n.exec("CREATE EXTENSION IF NOT EXISTS pg_idempotency");
        n.exec("CREATE TABLE IF NOT EXISTS cxx_work (scope text NOT NULL, note text NOT NULL)");
        return;
      } catch (const pqxx::sql_error&) {
        usleep(100000);
      }
    }
  }
};
[[maybe_unused]] auto* const g_env = ::testing::AddGlobalTestEnvironment(new Env);

// The calls pass ClaimOptions{} rather than std::nullopt: GCC 12 at -O2 (Release) and
// GCC 14 warn, falsely, that the temporary std::optional<std::string> made from
// std::nullopt may be used uninitialized.

int notes(pqxx::connection& c, const std::string& scope) {
  pqxx::nontransaction n(c);
  return pqxx_detail::exec1(n, "SELECT count(*) FROM cxx_work WHERE scope = $1", scope)[0].as<int>();
}
}  // namespace

TEST(Pqxx, ExecuteCommitsWithTheCallersTransactionThenReplays) {
  pqxx::connection conn(conninfo());
  const auto s = unique_scope();
  int runs = 0;
  auto handler = [&](pqxx::transaction_base& t) {
    ++runs;
    pqxx_detail::exec(t, "INSERT INTO cxx_work VALUES ($1, 'paid')", s);
    return Response{201, std::string("id\0=1", 5), R"({"Content-Type": "text/plain"})"};
  };
  {
    pqxx::work tx(conn);
    auto r = pqxx_execute(tx, s, "k", std::string("fp"), handler);
    EXPECT_EQ(r.outcome, Outcome::Claimed);
    EXPECT_EQ(r.attempt, 1);
    EXPECT_TRUE(r.locked_until.has_value());
    tx.commit();
  }
  {
    pqxx::work tx(conn);
    auto r = pqxx_execute(tx, s, "k", std::string("fp"), handler);
    EXPECT_EQ(r.outcome, Outcome::Replay);
    ASSERT_TRUE(r.response.has_value());
    EXPECT_EQ(r.response->status, 201);
    EXPECT_EQ(r.response->body, std::string("id\0=1", 5));
    EXPECT_EQ(to_http(r).headers.back().first, "Idempotent-Replayed");
    auto m = pqxx_execute(tx, s, "k", std::string("other"), handler);
    EXPECT_EQ(m.outcome, Outcome::Mismatch);
    tx.commit();
  }
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(notes(conn, s), 1);
  // The libpq client sees the same key.
  Client c(conninfo());
  EXPECT_EQ(c.claim(s, "k").outcome, Outcome::Replay);
}

TEST(Pqxx, CallerRollbackUndoesKeyAndWork) {
  pqxx::connection conn(conninfo());
  const auto s = unique_scope();
  {
    pqxx::work tx(conn);
    pqxx_execute(tx, s, "k", ClaimOptions{}, [&](pqxx::transaction_base& t) {
      pqxx_detail::exec(t, "INSERT INTO cxx_work VALUES ($1, 'x')", s);
      return Response{200, "", ""};
    });
    tx.abort();
  }
  EXPECT_EQ(notes(conn, s), 0);
  Client c(conninfo());
  EXPECT_EQ(c.claim(s, "k").outcome, Outcome::Claimed);
}

TEST(Pqxx, ThrowingHandlerRollsBackToTheSavepoint) {
  pqxx::connection conn(conninfo());
  const auto s = unique_scope();
  pqxx::work tx(conn);
  pqxx_detail::exec(tx, "INSERT INTO cxx_work VALUES ($1, 'before')", s);
  EXPECT_THROW(pqxx_execute(tx, s, "k", ClaimOptions{},
                            [&](pqxx::transaction_base& t) -> Response {
                              pqxx_detail::exec(t, "INSERT INTO cxx_work VALUES ($1, 'inside')", s);
                              throw std::logic_error("boom");
                            }),
               std::logic_error);
  auto again = pqxx_claim(tx, s, "k", ClaimOptions{});  // the key is free again, tx still usable
  EXPECT_EQ(again.outcome, Outcome::Claimed);
  EXPECT_EQ(pqxx_detail::exec1(tx, "SELECT count(*) FROM cxx_work WHERE scope = $1", s)[0].as<int>(), 1);
  tx.commit();
}

TEST(Pqxx, SqlErrorsCarryTheSqlstate) {
  pqxx::connection conn(conninfo());
  const auto s = unique_scope();
  {
    pqxx::work tx(conn);
    try {
      pqxx_claim(tx, "", "k", ClaimOptions{});
      ADD_FAILURE() << "empty scope accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), "22023");
    }
  }
  {
    pqxx::work tx(conn);
    auto r = pqxx_claim(tx, s, "k", ClaimOptions{});
    try {
      pqxx_finish(tx, s, "k", *r.token + 1, {200, "", ""});
      ADD_FAILURE() << "wrong token accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), "IK001");
    }
  }
  {
    pqxx::work tx(conn);
    EXPECT_THROW(pqxx_claim(tx, s, std::string("a\0b", 3), ClaimOptions{}), Error);
  }
}

TEST(Pqxx, FailingFinishRollsBackToTheSavepointAndReportsTheSqlstate) {
  pqxx::connection conn(conninfo());
  const auto s = unique_scope();
  pqxx::work tx(conn);
  pqxx_detail::exec(tx, "INSERT INTO cxx_work VALUES ($1, 'before')", s);
  try {
    pqxx_execute(tx, s, "k", ClaimOptions{}, [&](pqxx::transaction_base& t) {
      pqxx_detail::exec(t, "INSERT INTO cxx_work VALUES ($1, 'inside')", s);
      return Response{200, std::string(2 * 1024 * 1024, 'x'), ""};  // over max_response_size
    });
    ADD_FAILURE() << "oversized response accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), "54000");
  }
  EXPECT_EQ(pqxx_detail::exec1(tx, "SELECT count(*) FROM cxx_work WHERE scope = $1", s)[0].as<int>(), 1);
  const ClaimResult again = pqxx_claim(tx, s, "k", ClaimOptions{});
  EXPECT_EQ(again.outcome, Outcome::Claimed);
  tx.commit();
}

TEST(Pqxx, OptionsTtlLeaseWait) {
  pqxx::connection conn(conninfo());
  const auto s = unique_scope();
  pqxx::work tx(conn);
  ClaimOptions o;
  o.ttl = std::chrono::hours(2);
  o.lease = std::chrono::seconds(30);
  o.wait = std::chrono::milliseconds(100);
  const auto now = Clock::now();
  auto r = pqxx_claim(tx, s, "k", o);
  ASSERT_EQ(r.outcome, Outcome::Claimed);
  ASSERT_TRUE(r.expires_at && r.locked_until);
  EXPECT_NEAR(std::chrono::duration<double>(*r.expires_at - now).count(), 7200.0, 10.0);
  EXPECT_NEAR(std::chrono::duration<double>(*r.locked_until - now).count(), 30.0, 10.0);
  o.ttl = std::chrono::milliseconds(0);
  try {
    pqxx_claim(tx, s, "k2", o);
    ADD_FAILURE() << "ttl 0 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), "22023");
  }
}
