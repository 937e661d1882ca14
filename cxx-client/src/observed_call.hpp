// Reports one idempotency.* call of a Client to its observer (if it has one):
// the function, when it started, how long it took, and the SQLSTATE when it
// failed. Internal to the library.
#pragma once

#include <chrono>
#include <cstring>

#include "idempotency/client.hpp"
#include "idempotency/observer.hpp"

namespace idempotency::detail {

// "claim" -> "idempotency.claim" (a literal: nothing is allocated per call).
inline const char* sql_function_name(const char* what) noexcept {
  static const char* const names[] = {"idempotency.claim",      "idempotency.finish", "idempotency.checkpoint",
                                      "idempotency.release",    "idempotency.lookup", "idempotency.sweep",
                                      "idempotency.fingerprint", "idempotency.once"};
  for (const char* name : names) {
    if (std::strcmp(name + 12, what) == 0) return name;  // after "idempotency."
  }
  return what;
}

// Runs call() and tells observer about it; without an observer only call().
template <typename Call>
auto observed_call(Observer* observer, const char* what, PGconn* conn, Call&& call) -> decltype(call()) {
  if (observer == nullptr) return call();
  const auto start = std::chrono::system_clock::now();
  const auto t0 = std::chrono::steady_clock::now();
  auto report = [&](std::string_view sqlstate) noexcept {
    observer->sql_call(SqlCall{sql_function_name(what), start, std::chrono::steady_clock::now() - t0, sqlstate, conn});
  };
  try {
    auto result = call();
    report({});
    return result;
  } catch (const Error& e) {
    report(e.sqlstate());
    throw;
  } catch (...) {
    report("XX000");
    throw;
  }
}

}  // namespace idempotency::detail
