#include "pg/settings.hpp"

#include "pg/pg_headers.hpp"

namespace pgi::settings {
namespace {
int default_ttl_s = 24 * 60 * 60;
int default_lease_ms = 60 * 1000;
int max_response_bytes = 1024 * 1024;
bool sweeper_enabled = true;
int sweep_interval_ms = 60 * 1000;
int sweep_batch_size = 10000;
int max_sweepers = 2;
double sweep_throttle = 1.0;
}  // namespace

void Init() {
  DefineCustomIntVariable(
      "idempotency.default_ttl", "How long a key is kept after its first claim when claim() is given no ttl.", nullptr,
      &default_ttl_s, default_ttl_s, 1, INT_MAX, PGC_USERSET, GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("idempotency.default_lease",
                          "How long a claim holds its key before another claim may take it over, when claim() "
                          "or checkpoint() is given no lease.",
                          nullptr, &default_lease_ms, default_lease_ms, 1, INT_MAX, PGC_USERSET, GUC_UNIT_MS, nullptr,
                          nullptr, nullptr);
  DefineCustomIntVariable("idempotency.max_response_size", "Largest response (body plus headers) that finish() stores.",
                          nullptr, &max_response_bytes, max_response_bytes, 0, MaxAllocSize / 2, PGC_USERSET,
                          GUC_UNIT_BYTE, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("idempotency.sweeper",
                           "Whether the background sweeper deletes expired keys (needs the library preloaded).",
                           nullptr, &sweeper_enabled, sweeper_enabled, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("idempotency.sweep_interval", "Pause between two sweeps of a database.", nullptr,
                          &sweep_interval_ms, sweep_interval_ms, 10, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
                          nullptr);
  DefineCustomIntVariable("idempotency.sweep_batch_size",
                          "Most expired keys deleted in one sweep transaction; also sweep()'s default.", nullptr,
                          &sweep_batch_size, sweep_batch_size, 1, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("idempotency.max_sweepers",
                          "Most sweeper workers running at once, whatever the number of databases (the launcher "
                          "takes one background-worker slot more).",
                          nullptr, &max_sweepers, max_sweepers, 1, 64, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable("idempotency.sweep_throttle",
                           "How much the sweeper yields: after each short sweep transaction it sleeps this many "
                           "times as long as the transaction took, so it uses at most 1/(1 + this) of a core "
                           "(0: full batches back to back).",
                           nullptr, &sweep_throttle, sweep_throttle, 0.0, 100.0, PGC_SIGHUP, 0, nullptr, nullptr,
                           nullptr);
  MarkGUCPrefixReserved("idempotency");
}

int DefaultTtlSeconds() { return default_ttl_s; }
int DefaultLeaseMs() { return default_lease_ms; }
int MaxResponseBytes() { return max_response_bytes; }
bool SweeperEnabled() { return sweeper_enabled; }
int SweepIntervalMs() { return sweep_interval_ms; }
int SweepBatchSize() { return sweep_batch_size; }
int MaxSweepers() { return max_sweepers; }
double SweepThrottle() { return sweep_throttle; }

}  // namespace pgi::settings
