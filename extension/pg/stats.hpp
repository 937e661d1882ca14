// Counters shown by the idempotency.stats view, kept in shared memory.
//
// Updated with atomics only, never a lock, so counting costs the claim path a
// few nanoseconds. Without the library preloaded there is no shared memory:
// counting is then a no-op and the view reports that it needs preloading.
#pragma once

#include <cstdint>

namespace pgi::stats {

enum class Counter { Claims, Replays, InProgress, Mismatches, Takeovers, Finishes, Releases, Swept, kCount };

// Installs the shared-memory hooks. Call from _PG_init while preloading.
void Init();

void Add(Counter counter, std::uint64_t amount = 1);
void NoteSweep();  // records last_sweep_at = now
// The counter's value since server start (0 without shared memory).
std::uint64_t Read(Counter counter);

}  // namespace pgi::stats
