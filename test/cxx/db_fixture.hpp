// What the HTTP-level C++ tests (middleware_test.cpp and the observer tests
// through observe_fixture.hpp) share about the database: a statement on a
// connection of its own, the test database prepared once per binary, and keys
// no other test or run uses.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test_env.hpp"

namespace db_fixture {

// Runs one statement on a connection of its own; returns the first value.
inline std::string sql(const std::string& query, const std::vector<std::string>& params = {},
                       const std::string& ci = test_env::conninfo()) {
  PGconn* c = PQconnectdb(ci.c_str());
  std::vector<const char*> v;
  for (const auto& p : params) v.push_back(p.c_str());
  PGresult* r = PQexecParams(c, query.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0);
  std::string out;
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
  std::string error = ok ? "" : query + ": " + PQresultErrorMessage(r);
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) out = PQgetvalue(r, 0, 0);
  PQclear(r);
  PQfinish(c);
  if (!ok) throw std::runtime_error(error);
  return out;
}

// The test database with the extension and the test's own table
// (create_table: a CREATE TABLE IF NOT EXISTS statement).
class Env : public ::testing::Environment {
 public:
  explicit Env(std::string create_table) : create_table_(std::move(create_table)) {}

  void SetUp() override {
    const std::string db = test_env::conninfo().substr(7);
    if (sql("SELECT 1 FROM pg_database WHERE datname = $1", {db}, "dbname=postgres").empty()) {
      try {
        sql("CREATE DATABASE " + db, {}, "dbname=postgres");
      } catch (const std::exception&) {  // a parallel test binary won
      }
    }
    for (int i = 0; i < 5; ++i) {  // concurrent CREATE ... IF NOT EXISTS may still collide
      try {
        sql("CREATE EXTENSION IF NOT EXISTS pg_idempotency");
        sql(create_table_);
        break;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }

 private:
  std::string create_table_;
};

// A key (and tenant) no other test or run uses.
inline std::string unique(const std::string& what) {
  static std::atomic<int> n{0};
  return what + ":" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ":" + std::to_string(getpid()) +
         ":" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" + std::to_string(n++);
}

}  // namespace db_fixture
