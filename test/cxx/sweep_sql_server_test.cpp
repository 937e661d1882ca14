// The sweep statement's forms (extension/sweep_sql.cpp) run against a real
// server without Citus: each form deletes exactly the sweepable rows, at most
// the limit, oldest expiry first, and the Local form (the one used on a plain
// table and on each shard of a Citus node) skips a row another transaction
// has locked instead of waiting for it. The table is a scratch copy of
// idempotency.keys, as a shard table is.
#include "sweep_sql.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace {

using pgi::sweep_sql::Form;

std::string DbName() {
  const char* e = std::getenv("IDEMPOTENCY_SWEEP_SQL_TEST_DB");
  return e && *e ? e : "idempotency_sweep_sql_test";
}

class Conn {
 public:
  explicit Conn(const std::string& db) : c_(PQconnectdb(("dbname=" + db).c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) throw std::runtime_error(std::string("connect: ") + PQerrorMessage(c_));
    Exec("SET client_min_messages = warning");
  }
  ~Conn() { PQfinish(c_); }
  PGconn* get() const { return c_; }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Runs sql; returns the first value of the first row ("" if none) or, for
  // a command, the number of rows it touched. Throws on error.
  std::string Exec(const std::string& sql, const char* p1 = nullptr, const char* p2 = nullptr,
                   const char* p3 = nullptr) {
    const char* params[] = {p1, p2, p3};
    const int n = p3 ? 3 : (p2 ? 2 : (p1 ? 1 : 0));
    PGresult* r = PQexecParams(c_, sql.c_str(), n, nullptr, params, nullptr, nullptr, 0);
    const auto st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      const std::string msg = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error(sql + ": " + msg);
    }
    std::string out = st == PGRES_COMMAND_OK ? PQcmdTuples(r)
                                             : (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    // whole_row: every column of the first row, joined by '|' (NULL as "").
    if (whole_row && st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out.clear();
      for (int i = 0; i < PQnfields(r); i++) out += (i ? "|" : "") + std::string(PQgetvalue(r, 0, i));
    }
    PQclear(r);
    return out;
  }
  bool whole_row = false;

 private:
  PGconn* c_;
};

class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    Conn admin("postgres");
    if (admin.Exec("SELECT 1 FROM pg_database WHERE datname = $1", DbName().c_str()).empty()) {
      try {
        admin.Exec("CREATE DATABASE " + DbName());
      } catch (const std::exception&) {  // a parallel run created it first
      }
    }
    Conn db(DbName());
    // ctest runs each case as its own process, in parallel: one CREATE EXTENSION at a time.
    db.Exec("SELECT pg_advisory_lock(7170017)");
    db.Exec("CREATE EXTENSION IF NOT EXISTS pg_idempotency");
    db.Exec("SELECT pg_advisory_unlock(7170017)");
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Env);

// A scratch "shard": a copy of idempotency.keys with its primary key, in a
// schema of this process's own (ctest runs cases in parallel), filled with one
// row of each kind. Rows whose key starts with "gone" are the sweepable ones;
// gone1 expired first.
const std::string kSchema = "sweep_sql_test_" + std::to_string(getpid());
const std::string kTable = kSchema + ".keys_102008";

void Fill(Conn& c) {
  c.Exec("DROP SCHEMA IF EXISTS " + kSchema + " CASCADE");
  c.Exec("CREATE SCHEMA " + kSchema);
  c.Exec("CREATE TABLE " + kTable + " (LIKE idempotency.keys INCLUDING ALL)");
  c.Exec("INSERT INTO " + kTable +
         " (scope, key, state, token, attempt, locked_until, created_at, completed_at, expires_at) VALUES"
         " ('s', 'gone1', 'completed', 1, 1, NULL, now() - '3h'::interval, now() - '3h'::interval,"
         "  now() - '2h'::interval),"
         " ('s', 'gone2', 'completed', 2, 1, NULL, now() - '3h'::interval, now(), now() - '1h'::interval),"
         " ('s', 'gone3', 'in_progress', 3, 1, now() - '1s'::interval, now() - '3h'::interval, NULL,"
         "  now() - '30m'::interval),"
         " ('s', 'kept_leased', 'in_progress', 4, 1, now() + '1h'::interval, now() - '3h'::interval, NULL,"
         "  now() - '3h'::interval),"
         " ('s', 'kept_live', 'completed', 5, 1, NULL, now(), now(), now() + '1h'::interval),"
         " ('s', 'kept_running', 'in_progress', 6, 1, now() + '1m'::interval, now(), NULL,"
         "  now() + '1h'::interval)");
}

std::string Remaining(Conn& c) { return c.Exec("SELECT string_agg(key, ',' ORDER BY key) FROM " + kTable); }

// LocalFrom from -infinity: every row, as the other forms (its first batch).
// Each form answers the number of rows deleted (LocalFrom in its first column).
std::string Sweep(Conn& c, Form form, const char* limit) {
  return c.Exec(pgi::sweep_sql::Statement(form, kTable), "now", limit, form == Form::LocalFrom ? "-infinity" : nullptr);
}

class SweepSqlServer : public ::testing::TestWithParam<Form> {
 protected:
  void TearDown() override { Conn(DbName()).Exec("DROP SCHEMA IF EXISTS " + kSchema + " CASCADE"); }
};

TEST_P(SweepSqlServer, DeletesExactlyTheExpiredRowsNoLeasedOne) {
  Conn c(DbName());
  Fill(c);
  EXPECT_EQ(Sweep(c, GetParam(), "100"), "3");
  EXPECT_EQ(Remaining(c), "kept_leased,kept_live,kept_running");
  EXPECT_EQ(Sweep(c, GetParam(), "100"), "0");
}

TEST_P(SweepSqlServer, DeletesAtMostTheLimitOldestExpiryFirst) {
  Conn c(DbName());
  Fill(c);
  EXPECT_EQ(Sweep(c, GetParam(), "2"), "2");
  EXPECT_EQ(Remaining(c), "gone3,kept_leased,kept_live,kept_running");
  EXPECT_EQ(Sweep(c, GetParam(), "2"), "1");
  EXPECT_EQ(Remaining(c), "kept_leased,kept_live,kept_running");
}

TEST_P(SweepSqlServer, KeepsARowTakenOverWhileTheSweepWaited) {
  // Another transaction takes gone1 over (a claim re-using an expired key)
  // and commits after the sweep chose its batch: the row must survive.
  Conn c(DbName());
  Fill(c);
  Conn claim(DbName());
  claim.Exec("BEGIN");
  claim.Exec("UPDATE " + kTable +
             " SET expires_at = now() + '1h'::interval, state = 'in_progress', locked_until = now() + '1m'::interval"
             " WHERE key = 'gone1'");
  if (GetParam() != Form::Distributed) {
    // SKIP LOCKED: the sweep passes the locked row by at once.
    EXPECT_EQ(Sweep(c, GetParam(), "100"), "2");
    claim.Exec("COMMIT");
  } else {
    // The distributed form waits for the row lock; once the claim commits,
    // PostgreSQL re-checks the outer condition on the new version and keeps it.
    const std::string pid = c.Exec("SELECT pg_backend_pid()");
    const std::string sql = pgi::sweep_sql::Statement(GetParam(), kTable);
    const char* params[] = {"now", "100"};
    ASSERT_EQ(PQsendQueryParams(c.get(), sql.c_str(), 2, nullptr, params, nullptr, nullptr, 0), 1);
    Conn watch(DbName());
    bool waiting = false;
    for (int i = 0; i < 3000 && !waiting; i++) {  // until it waits on the row lock (at most ~30 s)
      waiting = watch.Exec("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = " + pid) == "t";
      if (!waiting) watch.Exec("SELECT pg_sleep(0.01)");
    }
    ASSERT_TRUE(waiting);
    claim.Exec("COMMIT");
    PGresult* r = PQgetResult(c.get());
    ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
    EXPECT_STREQ(PQcmdTuples(r), "2");
    PQclear(r);
    while ((r = PQgetResult(c.get())) != nullptr) PQclear(r);
  }
  EXPECT_EQ(Remaining(c), "gone1,kept_leased,kept_live,kept_running");
}

INSTANTIATE_TEST_SUITE_P(Forms, SweepSqlServer, ::testing::Values(Form::Local, Form::LocalFrom, Form::Distributed),
                         [](const ::testing::TestParamInfo<Form>& info) {
                           switch (info.param) {
                             case Form::Local:
                               return std::string("Local");
                             case Form::LocalFrom:
                               return std::string("LocalFrom");
                             case Form::Distributed:
                               return std::string("Distributed");
                           }
                           return std::string("Unknown");
                         });

// LocalFrom, batch after batch as the background sweeper runs it: each batch
// starts at the latest expiry the last one deleted (the statement's second
// column), and a row expired before that bound is left to the next turn.
class SweepFrom : public ::testing::Test {
 protected:
  void TearDown() override { Conn(DbName()).Exec("DROP SCHEMA IF EXISTS " + kSchema + " CASCADE"); }
  // Runs LocalFrom; returns "deleted|latest expiry deleted" (latest empty when none).
  static std::string Batch(Conn& c, const char* limit, const std::string& from) {
    c.whole_row = true;
    const std::string row = c.Exec(pgi::sweep_sql::Statement(Form::LocalFrom, kTable), "now", limit, from.c_str());
    c.whole_row = false;
    return row;
  }
  static std::string Expiry(Conn& c, const char* key) {
    return c.Exec("SELECT expires_at::text FROM " + kTable + " WHERE key = $1", key);
  }
};

TEST_F(SweepFrom, EachBatchEndsAtTheLatestExpiryItDeleted) {
  Conn c(DbName());
  Fill(c);
  const std::string gone1 = Expiry(c, "gone1"), gone2 = Expiry(c, "gone2"), gone3 = Expiry(c, "gone3");
  EXPECT_EQ(Batch(c, "1", "-infinity"), "1|" + gone1);
  EXPECT_EQ(Batch(c, "1", "-infinity"), "1|" + gone2);  // the first row is gone: the next one
  EXPECT_EQ(Batch(c, "5", "-infinity"), "1|" + gone3);
  EXPECT_EQ(Batch(c, "5", "-infinity"), "0|");  // nothing left: no latest expiry
  EXPECT_EQ(Remaining(c), "kept_leased,kept_live,kept_running");
}

TEST_F(SweepFrom, RowsExpiredBeforeTheBoundAreLeftForTheNextTurn) {
  Conn c(DbName());
  Fill(c);
  // From gone2's expiry on: gone1 (expired before it) stays; gone2 itself
  // (the bound is inclusive) and gone3 go.
  const std::string gone2 = Expiry(c, "gone2"), gone3 = Expiry(c, "gone3");
  EXPECT_EQ(Batch(c, "5", gone2), "2|" + gone3);
  EXPECT_EQ(Remaining(c), "gone1,kept_leased,kept_live,kept_running");
  // The next turn starts from -infinity again and finds it.
  EXPECT_EQ(Batch(c, "5", "-infinity").substr(0, 2), "1|");
  EXPECT_EQ(Remaining(c), "kept_leased,kept_live,kept_running");
}

}  // namespace
