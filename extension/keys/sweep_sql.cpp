#include "keys/sweep_sql.hpp"

namespace pgi::sweep_sql {
namespace {

// Operators are spelled OPERATOR(pg_catalog.x): an unqualified operator is
// looked up through the caller's search_path.
constexpr std::string_view kLe = " OPERATOR(pg_catalog.<=) ";
constexpr std::string_view kEq = " OPERATOR(pg_catalog.=) ";
constexpr std::string_view kNe = " OPERATOR(pg_catalog.<>) ";
constexpr std::string_view kGe = " OPERATOR(pg_catalog.>=) ";

// The rows a sweep may delete, for the table aliased as alias.
std::string Sweepable(std::string_view alias) {
  std::string a(alias);
  std::string s;
  s += a + ".expires_at" + std::string(kLe) + "$1 AND (" + a + ".state" + std::string(kNe) +
       "'in_progress'::idempotency.state OR " + a + ".locked_until IS NULL OR " + a + ".locked_until" +
       std::string(kLe) + "$1)";
  return s;
}

}  // namespace

std::string Statement(Form form, std::string_view table) {
  const std::string t(table);
  switch (form) {
    case Form::Local:
      return "DELETE FROM " + t + " WHERE ctid" + std::string(kEq) + "ANY (ARRAY(SELECT e.ctid FROM " + t +
             " AS e WHERE " + Sweepable("e") + " ORDER BY e.expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))";
    case Form::LocalFrom:
      // The bound is inclusive: rows sharing the last batch's latest expiry
      // that its LIMIT cut off are still found.
      return "WITH d AS (DELETE FROM " + t + " WHERE ctid" + std::string(kEq) + "ANY (ARRAY(SELECT e.ctid FROM " + t +
             " AS e WHERE " + Sweepable("e") + " AND e.expires_at" + std::string(kGe) +
             "$3 ORDER BY e.expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)) RETURNING expires_at)"
             " SELECT pg_catalog.count(*), pg_catalog.max(d.expires_at) FROM d";
    case Form::Distributed:
      return "DELETE FROM " + t + " AS k WHERE " + Sweepable("k") + " AND (k.scope, k.key)" + std::string(kEq) +
             "ANY (SELECT e.scope, e.key FROM " + t + " AS e WHERE " + Sweepable("e") +
             " ORDER BY e.expires_at LIMIT $2)";
  }
  return {};
}

}  // namespace pgi::sweep_sql
