// How a sweeper worker yields to the claims running beside it: pure C++, free
// of PostgreSQL headers (unit-tested in test/cxx/sweep_schedule_test.cpp).
//
// * Short slices: while paced, a batch aims at about kSliceUs of CPU time
//   (its row count follows the rate of the batch before, never above
//   sweep_batch_size), so that a claim running beside it never competes with
//   a long burst of deleting.
// * Sleeps in proportion: the worker sleeps `throttle` times as long as it
//   has worked (CPU time; idempotency.sweep_throttle), so that it uses at
//   most 1 / (1 + throttle) of one core.
// * Keeps to a rate derived from the insert rate: at most kRowsPerClaim rows
//   a second for every key claimed a second on the server (the claims
//   counter of idempotency.stats), and never less than kFloorRowsPerSecond;
//   while no key is claimed at all, the throttle alone (nobody to yield to).
//   Expired keys were made at the claim rate of a day (their ttl) ago, so
//   20 times today's rate keeps up with any backlog a steady load leaves,
//   while the sweep's CPU, WAL and full-page images are spread thinly over
//   the time claims run (see bench/README.md, "Sweeper p99").
// throttle = 0 turns all three off: full-size batches back to back.
#pragma once

#include <cstdint>
#include <optional>

namespace pgi::sweeper::pacing {

using Micros = std::int64_t;

// 5 ms of CPU: a claim that the operating system makes wait for a slice waits
// about that long at most. Measured on the shared 2-core machine (claims at
// 2000/s, 400k-1M expired rows, 3-5 interleaved rounds): once each batch
// started where the last one ended (sweep_sql LocalFrom), a 5 ms slice held
// ~1,900 rows (2.6 us of CPU a row) and a turn swept 100-190k rows/s with the
// default throttle; 2, 10 or 20 ms slices, throttle 2, nice 5-19 or even
// SCHED_IDLE changed neither the claims' p99 nor their run-queue delay beyond
// the noise, so the slice stays. (Before that fix every batch first walked
// the dead index entries of the rows deleted before it: 5 ms of CPU a batch
// a million rows in, whatever the slice. The direct delete, direct_sweep.hpp,
// later cut a row's CPU and WAL to about half; the slice was kept.)
constexpr Micros kSliceUs = 5'000;
constexpr std::int64_t kFirstLimit = 500;  // rows of the first paced batch
constexpr std::int64_t kMinLimit = 50;

// Rows a second the worker aims at per key claimed a second, and the least
// it aims at (an idle server, a backlog left while the sweeper was off).
constexpr double kRowsPerClaim = 20;
constexpr double kFloorRowsPerSecond = 20'000;

// Rows a second to aim at while `claims_per_second` keys are claimed; 0 for
// no limit. Not measured yet (the start of a turn): the floor.
double TargetRate(std::optional<double> claims_per_second);

// Claims a second, from readings of the claims counter at least
// kRateWindowUs apart (none until a window has passed).
constexpr Micros kRateWindowUs = 250'000;
class ClaimRate {
 public:
  // A reading of the counter at time now; returns the rate so far.
  std::optional<double> Update(Micros now, std::uint64_t claims);
  std::optional<double> rate() const { return rate_; }

 private:
  Micros since_ = -1;
  std::uint64_t from_ = 0;
  std::optional<double> rate_;
};

// Keeps deletions to a rate: after `rows` more rows, the wait until the
// next batch may start. Rows owed while the worker ran behind (a busy
// machine) are not made up with a burst: at most kRateSlackUs of them.
constexpr Micros kRateSlackUs = 100'000;
class RatePacer {
 public:
  Micros PauseAfter(Micros now, std::int64_t rows, double rows_per_second);

 private:
  Micros due_ = -1;  // when the rows deleted so far are due at the rate
};

// The pause owed after `worked` of sweeping and `slept` of pausing so far in
// this turn: throttle x worked - slept, at most one second. Counting what was
// really slept keeps the ratio on a busy machine, where a sleep of 2 ms may
// last 20: the next batches then go without pausing until it is made up.
Micros PauseOwed(Micros worked, Micros slept, double throttle);

// Rows for the next batch, given the last one (limit asked, rows deleted,
// time taken) and sweep_batch_size. last_limit = 0: the first batch.
std::int64_t NextLimit(std::int64_t last_limit, std::int64_t last_rows, Micros last_elapsed, std::int64_t batch_size,
                       double throttle);

}  // namespace pgi::sweeper::pacing
