#include "pg/stats.hpp"

#include <cstddef>

#include "pg/boundary.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
}

namespace pgi::stats {
namespace {

constexpr std::size_t kCounters = static_cast<std::size_t>(Counter::kCount);

struct SharedStats {
  pg_atomic_uint64 counters[kCounters];
  pg_atomic_uint64 last_sweep_at;  // TimestampTz, 0 = never
};

SharedStats* shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

void RequestSharedMemory() {
  if (previous_request_hook) previous_request_hook();
  RequestAddinShmemSpace(MAXALIGN(sizeof(SharedStats)));
}

void AttachSharedMemory() {
  if (previous_startup_hook) previous_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found = false;
  shared = static_cast<SharedStats*>(ShmemInitStruct("pg_idempotency stats", sizeof(SharedStats), &found));
  if (!found) {
    for (auto& counter : shared->counters) pg_atomic_init_u64(&counter, 0);
    pg_atomic_init_u64(&shared->last_sweep_at, 0);
  }
  LWLockRelease(AddinShmemInitLock);
}

}  // namespace

void Init() {
  previous_request_hook = shmem_request_hook;
  shmem_request_hook = RequestSharedMemory;
  previous_startup_hook = shmem_startup_hook;
  shmem_startup_hook = AttachSharedMemory;
}

void Add(Counter counter, std::uint64_t amount) {
  if (shared != nullptr) pg_atomic_fetch_add_u64(&shared->counters[static_cast<std::size_t>(counter)], amount);
}

std::uint64_t Read(Counter counter) {
  return shared != nullptr ? pg_atomic_read_u64(&shared->counters[static_cast<std::size_t>(counter)]) : 0;
}

void NoteSweep() {
  if (shared != nullptr) pg_atomic_write_u64(&shared->last_sweep_at, static_cast<uint64>(GetCurrentTimestamp()));
}

}  // namespace pgi::stats

// idempotency._stats(): one row of counters for the idempotency.stats view.
PGI_SQL_FUNCTION(idempotency_stats) {
  using namespace pgi;
  return Guard([&]() -> Datum {
    if (stats::shared == nullptr)
      throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "idempotency.stats needs pg_idempotency preloaded",
                  "The counters live in shared memory, which only a preloaded library can request.",
                  "Add pg_idempotency to shared_preload_libraries and restart the server.");
    return PgCall([&]() -> Datum {
      TupleDesc tupdesc;
      if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "idempotency._stats must return a composite type");
      tupdesc = BlessTupleDesc(tupdesc);
      Datum values[stats::kCounters + 1];
      bool nulls[stats::kCounters + 1] = {};
      for (std::size_t i = 0; i < stats::kCounters; i++)
        values[i] = Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&stats::shared->counters[i])));
      uint64 last = pg_atomic_read_u64(&stats::shared->last_sweep_at);
      values[stats::kCounters] = TimestampTzGetDatum(static_cast<TimestampTz>(last));
      nulls[stats::kCounters] = last == 0;
      return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
    });
  });
}
