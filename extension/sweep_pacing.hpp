// How a sweeper worker yields to the claims running beside it: pure C++, free
// of PostgreSQL headers (unit-tested in test/cxx/sweep_schedule_test.cpp).
//
// * Short slices: while paced, a batch aims at about kSliceUs of work (its
//   row count follows the rate of the batch before, never above
//   sweep_batch_size), so that a claim running beside it never competes with
//   a long burst of deleting.
// * Sleeps in proportion: after each batch the worker sleeps `throttle` times
//   as long as the batch took (idempotency.sweep_throttle), so that it uses at
//   most 1 / (1 + throttle) of one core and of the WAL bandwidth it could use.
// throttle = 0 turns both off: full-size batches back to back.
#pragma once

#include <cstdint>

namespace pgi::sweeper::pacing {

using Micros = std::int64_t;

// 2 ms, as autovacuum's cost-based delay: a claim that the operating system
// makes wait for a slice waits about that long at most.
constexpr Micros kSliceUs = 2'000;
constexpr std::int64_t kFirstLimit = 200;  // rows of the first paced batch
constexpr std::int64_t kMinLimit = 50;

// The pause after a batch that took `elapsed`; at most one second.
Micros PauseAfter(Micros elapsed, double throttle);

// Rows for the next batch, given the last one (limit asked, rows deleted,
// time taken) and sweep_batch_size. last_limit = 0: the first batch.
std::int64_t NextLimit(std::int64_t last_limit, std::int64_t last_rows, Micros last_elapsed, std::int64_t batch_size,
                       double throttle);

}  // namespace pgi::sweeper::pacing
