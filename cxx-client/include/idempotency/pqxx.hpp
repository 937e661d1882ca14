// <idempotency/pqxx.hpp> — execute() inside an existing libpqxx transaction.
//
// Header-only and optional: include it only in code that already uses
// libpqxx (6.4 to 8; libpqxx 8 needs C++20) and link libpqxx yourself. It
// needs no PGconn*: the same SQL calls go through the caller's pqxx transaction.
//
//   pqxx::connection conn("dbname=app");
//   pqxx::work tx(conn);
//   auto r = idempotency::pqxx_execute(tx, "payments", key, fingerprint,
//                                      [&](pqxx::transaction_base& t) {
//     t.exec("INSERT INTO payments (amount) VALUES ($1)", pqxx::params{100});
//     return idempotency::Response{201, "{\"id\": 1}", ""};
//   });
//   tx.commit();   // the key and the payment become durable together
//
// The work runs under a SAVEPOINT in tx: a throwing handler rolls back to it
// (the key is free again, tx stays usable) and the exception is rethrown.
// The handler gets tx itself.
// SQL errors come back as idempotency::Error with the SQLSTATE.
#pragma once

#include <pqxx/pqxx>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "idempotency/client.hpp"

namespace idempotency {

using PqxxHandler = std::function<Response(pqxx::transaction_base&)>;

namespace pqxx_detail {

// libpqxx up to 7.9 takes parameters through exec_params() and binary data as
// binarystring; 7.10 deprecates both, 8 removes binarystring. From 7.10 on:
// exec(sql, params) and pqxx::bytes.
#if PQXX_VERSION_MAJOR > 7 || (PQXX_VERSION_MAJOR == 7 && PQXX_VERSION_MINOR >= 10)
#define IDEMPOTENCY_PQXX_PARAMS 1
#endif

template <class... Args>
pqxx::result exec(pqxx::transaction_base& tx, const std::string& sql, Args&&... args) {
#ifdef IDEMPOTENCY_PQXX_PARAMS
  return tx.exec(sql, pqxx::params{std::forward<Args>(args)...});
#else
  return tx.exec_params(sql, std::forward<Args>(args)...);
#endif
}

template <class... Args>
pqxx::row exec1(pqxx::transaction_base& tx, const std::string& sql, Args&&... args) {
#ifdef IDEMPOTENCY_PQXX_PARAMS
  return exec(tx, sql, std::forward<Args>(args)...).one_row();
#else
  return tx.exec_params1(sql, std::forward<Args>(args)...);
#endif
}

// A bytea parameter from raw bytes.
inline auto bytea(std::string_view s) {
#ifdef IDEMPOTENCY_PQXX_PARAMS
  pqxx::bytes b;
  b.resize(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
#else
  return pqxx::binarystring(s.data(), s.size());
#endif
}

// A bytea field's raw bytes (a pqxx::field, or libpqxx 8's field_ref).
template <class Field>
std::string bytea_text(const Field& f) {
#ifdef IDEMPOTENCY_PQXX_PARAMS
  const auto b = f.template as<pqxx::bytes>();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
#else
  return pqxx::binarystring(f).str();
#endif
}

inline std::string text_arg(std::string_view s) {
  // libpqxx sends text parameters NUL-terminated: refuse rather than truncate.
  if (s.find('\0') != std::string_view::npos) {
    throw Error("22021", "idempotency: scope and key must not contain NUL bytes");
  }
  return std::string(s);
}

template <class Field>
std::optional<TimePoint> micros(const Field& f) {
  if (f.is_null()) return std::nullopt;
  return TimePoint(std::chrono::duration_cast<Clock::duration>(std::chrono::microseconds(f.template as<long long>())));
}

template <class F>
auto translate(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const pqxx::broken_connection& e) {
    throw Error("08006", std::string("idempotency: connection lost: ") + e.what());
  } catch (const pqxx::sql_error& e) {
    const std::string sqlstate(e.sqlstate());  // a std::string_view from libpqxx 8 on
    throw Error(sqlstate.empty() ? "XX000" : sqlstate, e.what());
  }
}

}  // namespace pqxx_detail

// claim() through a libpqxx transaction (stored timestamps included).
inline ClaimResult pqxx_claim(pqxx::transaction_base& tx, std::string_view scope, std::string_view key,
                              const ClaimOptions& options) {
  static const std::string sql =
      "SELECT c.outcome::text, c.token, c.attempt, c.recovery_point, c.response_status, "
      "c.response_headers::text, c.response_body, "
      "(extract(epoch FROM c.expires_at) * 1000000)::int8, "
      "(extract(epoch FROM c.locked_until) * 1000000)::int8 "
      "FROM idempotency.claim($1::text, $2::text, $3::bytea, NULLIF($4, '')::interval, "
      "NULLIF($5, '')::interval, $6::interval) AS c";
  auto interval = [](const std::optional<std::chrono::milliseconds>& ms) {
    return ms ? std::to_string(ms->count()) + " milliseconds" : std::string();
  };
  return pqxx_detail::translate([&] {
    const std::string s = pqxx_detail::text_arg(scope), k = pqxx_detail::text_arg(key);
    const std::string ttl = interval(options.ttl), lease = interval(options.lease),
                      wait = interval(options.wait.value_or(std::chrono::milliseconds(0)));
    pqxx::row row = options.fingerprint
                        ? pqxx_detail::exec1(tx, sql, s, k, pqxx_detail::bytea(*options.fingerprint), ttl, lease, wait)
                        : pqxx_detail::exec1(tx, sql, s, k, nullptr, ttl, lease, wait);
    ClaimResult r;
    const std::string outcome = row[0].as<std::string>();
    r.outcome = outcome == "claimed"    ? Outcome::Claimed
                : outcome == "replay"   ? Outcome::Replay
                : outcome == "mismatch" ? Outcome::Mismatch
                                        : Outcome::InProgress;
    if (!row[1].is_null()) r.token = row[1].as<std::int64_t>();
    if (!row[2].is_null()) r.attempt = row[2].as<int>();
    if (!row[3].is_null()) r.recovery_point = row[3].as<std::string>();
    if (!row[4].is_null()) {
      r.response = Response{row[4].as<int>(), pqxx_detail::bytea_text(row[6]),
                            row[5].is_null() ? std::string() : row[5].as<std::string>()};
    }
    r.expires_at = pqxx_detail::micros(row[7]);
    r.locked_until = pqxx_detail::micros(row[8]);
    return r;
  });
}

inline ClaimResult pqxx_claim(pqxx::transaction_base& tx, std::string_view scope, std::string_view key,
                              const std::optional<std::string>& fingerprint) {
  ClaimOptions options;
  options.fingerprint = fingerprint;
  return pqxx_claim(tx, scope, key, options);
}

// finish() through a libpqxx transaction.
inline bool pqxx_finish(pqxx::transaction_base& tx, std::string_view scope, std::string_view key, std::int64_t token,
                        const Response& response) {
  return pqxx_detail::translate([&] {
    pqxx::row row = pqxx_detail::exec1(
        tx, "SELECT idempotency.finish($1::text, $2::text, $3::int8, $4::int4, $5::bytea, NULLIF($6::text, '')::jsonb)",
        pqxx_detail::text_arg(scope), pqxx_detail::text_arg(key), token, response.status,
        pqxx_detail::bytea(response.body), response.headers_json);
    return row[0].as<bool>();
  });
}

// Client::execute() for services that already use libpqxx: claim -> handler
// -> finish inside tx (under a savepoint); the caller commits tx.
inline ClaimResult pqxx_execute(pqxx::transaction_base& tx, std::string_view scope, std::string_view key,
                                const ClaimOptions& options, const PqxxHandler& handler) {
  // Plain SAVEPOINT statements: libpqxx 6's subtransaction does not issue its
  // SAVEPOINT before a parameterised statement, so it cannot be relied on here.
  pqxx_detail::translate([&] { return tx.exec("SAVEPOINT idempotency_execute"); });
  try {
    ClaimResult r = pqxx_claim(tx, scope, key, options);
    if (r.outcome == Outcome::Claimed) {
      Response resp = handler(tx);
      pqxx_finish(tx, scope, key, *r.token, resp);
      r.response = std::move(resp);
    }
    pqxx_detail::translate([&] { return tx.exec("RELEASE SAVEPOINT idempotency_execute"); });
    return r;
  } catch (...) {
    try {  // the key is free again, the caller's earlier work stays, tx stays usable
      tx.exec("ROLLBACK TO SAVEPOINT idempotency_execute");
      tx.exec("RELEASE SAVEPOINT idempotency_execute");
    } catch (...) {
    }
    throw;
  }
}

inline ClaimResult pqxx_execute(pqxx::transaction_base& tx, std::string_view scope, std::string_view key,
                                const std::optional<std::string>& fingerprint, const PqxxHandler& handler) {
  ClaimOptions options;
  options.fingerprint = fingerprint;
  return pqxx_execute(tx, scope, key, options, handler);
}

}  // namespace idempotency
