// Unit tests of the sweep statement's text (extension/sweep_sql.cpp), the one
// place the sweep lives. The SQL-level tests run the Local form against a
// server (test/sql/03_fingerprint_sweep.sql); the Distributed form and the
// per-shard use of Local need Citus and are checked by hand (README,
// "Scale-out with Citus").
#include "sweep_sql.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace {

using pgi::sweep_sql::Form;
using pgi::sweep_sql::kKeysTable;
using pgi::sweep_sql::Statement;

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Every comparison names its operator in pg_catalog: no bare =, <>, <=, >, <
// outside OPERATOR(...), so a caller's search_path cannot redirect one.
void ExpectOperatorsQualified(const std::string& sql) {
  const std::string stripped = std::regex_replace(sql, std::regex(R"(OPERATOR\(pg_catalog\.[<>=]+\))"), "");
  EXPECT_EQ(stripped.find_first_of("<>="), std::string::npos) << sql;
}

void ExpectSweepsOnlyExpiredAndUnleased(const std::string& sql, const std::string& alias) {
  EXPECT_TRUE(Contains(sql, alias + ".expires_at OPERATOR(pg_catalog.<=) $1")) << sql;
  EXPECT_TRUE(Contains(sql, alias + ".state OPERATOR(pg_catalog.<>) 'in_progress'::idempotency.state OR " + alias +
                                ".locked_until IS NULL OR " + alias + ".locked_until OPERATOR(pg_catalog.<=) $1"))
      << sql;
}

TEST(SweepSql, LocalOnTheKeysTableSkipsLockedRowsAndDeletesByCtid) {
  const std::string sql = Statement(Form::Local, kKeysTable);
  EXPECT_EQ(sql.rfind("DELETE FROM idempotency.keys WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(", 0), 0u) << sql;
  EXPECT_TRUE(Contains(sql, "ORDER BY e.expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"));
  ExpectSweepsOnlyExpiredAndUnleased(sql, "e");
  ExpectOperatorsQualified(sql);
}

TEST(SweepSql, LocalOnAShardNamesTheShardTwiceAndNeverTheShell) {
  const std::string sql = Statement(Form::Local, "idempotency.keys_102008");
  EXPECT_TRUE(Contains(sql, "DELETE FROM idempotency.keys_102008 WHERE"));
  EXPECT_TRUE(Contains(sql, "FROM idempotency.keys_102008 AS e"));
  EXPECT_FALSE(Contains(sql, "idempotency.keys ")) << "a shard sweep must not touch the distributed table";
  ExpectOperatorsQualified(sql);
}

TEST(SweepSql, DistributedHasNoRowLockingClauseAndNoCtid) {
  // Citus refuses FOR UPDATE/SHARE in a query across shards (0A000), and a
  // ctid means nothing across shards.
  const std::string sql = Statement(Form::Distributed, kKeysTable);
  EXPECT_FALSE(Contains(sql, "FOR UPDATE"));
  EXPECT_FALSE(Contains(sql, "ctid"));
  EXPECT_FALSE(Contains(sql, "SKIP LOCKED"));
}

TEST(SweepSql, DistributedPicksABoundedBatchByPrimaryKeyAndRechecksIt) {
  const std::string sql = Statement(Form::Distributed, kKeysTable);
  EXPECT_EQ(sql.rfind("DELETE FROM idempotency.keys AS k WHERE ", 0), 0u) << sql;
  EXPECT_TRUE(
      Contains(sql, "(k.scope, k.key) OPERATOR(pg_catalog.=) ANY (SELECT e.scope, e.key FROM idempotency.keys AS e"));
  EXPECT_TRUE(Contains(sql, "ORDER BY e.expires_at LIMIT $2)"));
  // The outer condition is re-checked on a row a claim took over meanwhile.
  ExpectSweepsOnlyExpiredAndUnleased(sql, "k");
  ExpectSweepsOnlyExpiredAndUnleased(sql, "e");
  ExpectOperatorsQualified(sql);
}

TEST(SweepSql, LocalFromIsLocalStartingAtTheBoundAndAnswersCountAndLatestExpiry) {
  const std::string sql = Statement(Form::LocalFrom, kKeysTable);
  EXPECT_EQ(sql.rfind("WITH d AS (DELETE FROM idempotency.keys WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(", 0), 0u)
      << sql;
  // Inclusive, so rows sharing the last batch's latest expiry are still found.
  EXPECT_TRUE(Contains(sql,
                       "AND e.expires_at OPERATOR(pg_catalog.>=) $3 ORDER BY e.expires_at LIMIT $2 FOR UPDATE "
                       "SKIP LOCKED)) RETURNING expires_at)"))
      << sql;
  EXPECT_TRUE(Contains(sql, "SELECT pg_catalog.count(*), pg_catalog.max(d.expires_at) FROM d")) << sql;
  ExpectSweepsOnlyExpiredAndUnleased(sql, "e");
  ExpectOperatorsQualified(sql);
}

TEST(SweepSql, EveryFormUsesNowAndLimitOnlyLocalFromABound) {
  for (const Form form : {Form::Local, Form::LocalFrom, Form::Distributed}) {
    const std::string sql = Statement(form, kKeysTable);
    EXPECT_TRUE(Contains(sql, "$1"));
    EXPECT_TRUE(Contains(sql, "$2"));
    EXPECT_EQ(Contains(sql, "$3"), form == Form::LocalFrom);
  }
}

}  // namespace
