// Where the C++ tests connect and how they build Clients, in one place.
// Connection: libpq's PG* environment; database idempotency_cxx_test, or
// IDEMPOTENCY_TEST_DB. IDEMPOTENCY_TEST_POOLER=1 builds every Client in pooler
// mode (scripts/suites/80-pooler.sh runs the suites so, through PgBouncer in
// transaction mode); IDEMPOTENCY_TEST_PIPELINE=0 turns execute()'s and once()'s
// pipelining off.
#pragma once

#include <cstdlib>
#include <string>

#include "idempotency/client.hpp"

namespace test_env {

inline bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e != nullptr && std::string(e) == value;
}

inline std::string db_name() {
  const char* e = std::getenv("IDEMPOTENCY_TEST_DB");
  return e && *e ? e : "idempotency_cxx_test";
}

inline std::string conninfo() { return "dbname=" + db_name(); }

inline bool pooled() { return env_is("IDEMPOTENCY_TEST_POOLER", "1"); }

inline idempotency::ClientOptions test_options() {
  idempotency::ClientOptions o;
  o.pooler = pooled();
  if (env_is("IDEMPOTENCY_TEST_PIPELINE", "0")) o.pipeline = false;
  return o;
}

}  // namespace test_env
