// Unit tests of the sweeper launcher's schedule (extension/sweep_schedule.cpp):
// which database gets the next worker; and of a worker's pacing
// (extension/sweep_pacing.cpp): batch sizes and the pause after a batch. The TAP
// tests (test/t/001, 004) cover the same rules end to end.
#include "sweep_pacing.hpp"
#include "sweep_schedule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace {

using namespace pgi::sweeper::schedule;

constexpr Micros kSecond = 1'000'000;
constexpr Micros kInterval = 60 * kSecond;

Database Present(Micros last_turn) {
  Database db;
  db.known = Known::Present;
  db.last_turn = last_turn;
  return db;
}

TEST(SweepSchedule, UnknownDatabasesAreDueAtOnceAbsentOnesNever) {
  Database unknown;
  Database absent;
  absent.known = Known::Absent;
  EXPECT_EQ(DueAt(unknown, kInterval), 0);
  EXPECT_EQ(DueAt(absent, kInterval), kNever);
  absent.woken = true;  // CREATE EXTENSION committed there
  EXPECT_EQ(DueAt(absent, kInterval), 0);
}

TEST(SweepSchedule, PresentDatabaseIsDueOneIntervalAfterItsLastTurnOrAtOnceWithABacklog) {
  Database db = Present(100 * kSecond);
  EXPECT_EQ(DueAt(db, kInterval), 160 * kSecond);
  db.backlog = true;
  EXPECT_EQ(DueAt(db, kInterval), 100 * kSecond);
  db.running = true;
  EXPECT_EQ(DueAt(db, kInterval), kNever);
}

TEST(SweepSchedule, HeldOrRetryingDatabaseWaits) {
  Database db = Present(0);
  db.not_before = 500 * kSecond;
  EXPECT_EQ(DueAt(db, kInterval), 500 * kSecond);
  EXPECT_EQ(Next(&db, 1, 499 * kSecond, kInterval), -1);
  EXPECT_EQ(Next(&db, 1, 500 * kSecond, kInterval), 0);
}

TEST(SweepSchedule, WokenGoesFirstThenTheLongestWaiting) {
  std::vector<Database> dbs = {Present(10 * kSecond), Present(5 * kSecond), Present(20 * kSecond)};
  EXPECT_EQ(Next(dbs.data(), 3, 100 * kSecond, kInterval), 1);
  dbs[2].woken = true;
  EXPECT_EQ(Next(dbs.data(), 3, 100 * kSecond, kInterval), 2);
}

TEST(SweepSchedule, BacklogOnlyTakesTurnsNobodyElseNeeds) {
  // db 0 has a backlog and just had a turn; db 1 is overdue: db 1 goes first.
  std::vector<Database> dbs = {Present(99 * kSecond), Present(30 * kSecond)};
  dbs[0].backlog = true;
  EXPECT_EQ(Next(dbs.data(), 2, 100 * kSecond, kInterval), 1);
  // Once db 1 runs, the backlog gets the free worker.
  dbs[1].running = true;
  EXPECT_EQ(Next(dbs.data(), 2, 100 * kSecond, kInterval), 0);
  EXPECT_EQ(Waiting(dbs.data(), 2, 100 * kSecond, kInterval), 1);
}

TEST(SweepSchedule, NextDueIsTheEarliestFutureOne) {
  std::vector<Database> dbs = {Present(10 * kSecond), Present(20 * kSecond), Present(0)};
  dbs[2].known = Known::Absent;
  EXPECT_EQ(NextDue(dbs.data(), 3, 50 * kSecond, kInterval), 70 * kSecond);
  EXPECT_EQ(NextDue(dbs.data(), 3, 75 * kSecond, kInterval), 80 * kSecond);
  EXPECT_EQ(NextDue(dbs.data(), 3, 85 * kSecond, kInterval), kNever);
}

// Simulates N databases, each turn taking the whole budget, M workers: every
// database's turns start within interval x ceil(N / M) of each other.
void CheckBound(int n, int m, Micros interval) {
  std::vector<Database> dbs(n);
  for (auto& db : dbs) db = Present(0), db.backlog = true;  // all want turns all the time
  std::vector<Micros> ends(n, 0);
  std::vector<Micros> last_start(n, -1);
  Micros worst_gap = 0;
  const Micros step = interval / 100;
  const Micros bound = interval * ((n + m - 1) / m);
  for (Micros now = 0; now < 20 * bound; now += step) {
    int running = 0;
    for (int i = 0; i < n; i++) {
      if (dbs[i].running && ends[i] <= now) dbs[i].running = false;
      running += dbs[i].running;
    }
    while (running < m) {
      const int next = Next(dbs.data(), n, now, interval);
      if (next < 0) break;
      if (last_start[next] >= 0) worst_gap = std::max(worst_gap, now - last_start[next]);
      last_start[next] = now;
      dbs[next].running = true;
      dbs[next].last_turn = now;
      ends[next] = now + TurnBudget(interval) + step;  // plus a start-up cost
      running++;
    }
  }
  for (int i = 0; i < n; i++) EXPECT_GE(last_start[i], 0) << "database " << i << " never swept";
  EXPECT_LE(worst_gap, bound) << n << " databases, " << m << " workers";
}

TEST(SweepSchedule, EveryDatabaseGetsATurnWithinTheBound) {
  for (int n : {1, 2, 3, 7, 20, 100})
    for (int m : {1, 2, 3, 5}) CheckBound(n, m, kInterval);
}

TEST(SweepPacing, PauseIsProportionalToTheWorkAndCountsWhatWasReallySlept) {
  using pgi::sweeper::pacing::PauseOwed;
  EXPECT_EQ(PauseOwed(10'000, 0, 0), 0);
  EXPECT_EQ(PauseOwed(10'000, 0, 2.0), 20'000);
  EXPECT_EQ(PauseOwed(10'000, 15'000, 2.0), 5'000);
  // A sleep that overshot (a busy machine) is made up by not pausing.
  EXPECT_EQ(PauseOwed(12'000, 40'000, 2.0), 0);
  EXPECT_EQ(PauseOwed(10 * kSecond, 0, 2.0), kSecond);
  // Over a turn the ratio holds whatever each sleep really lasted.
  std::int64_t worked = 0, slept = 0;
  for (int i = 0; i < 1000; i++) {
    worked += 2'000;
    const auto owed = PauseOwed(worked, slept, 1.0);
    if (owed > 0) slept += owed + 15'000;  // every sleep 15 ms too long
  }
  EXPECT_NEAR(static_cast<double>(slept) / static_cast<double>(worked), 1.0, 0.01);
}

TEST(SweepPacing, BatchesAimAtAShortSliceNeverAboveTheBatchSize) {
  using namespace pgi::sweeper::pacing;
  EXPECT_EQ(NextLimit(0, 0, 0, 10000, 0), 10000) << "unpaced: full batches";
  EXPECT_EQ(NextLimit(0, 0, 0, 10000, 1.0), kFirstLimit);
  EXPECT_EQ(NextLimit(0, 0, 0, 70, 1.0), 70);
  // 500 rows in 1 ms: 2500 fit in a 5 ms slice; halfway there.
  EXPECT_EQ(NextLimit(500, 500, 1000, 10000, 1.0), 1500);
  // Converges on the slice and stays under sweep_batch_size.
  std::int64_t limit = kFirstLimit;
  for (int i = 0; i < 20; i++) limit = NextLimit(limit, limit, limit * 2, 10000, 1.0);  // 2 us a row
  EXPECT_NEAR(static_cast<double>(limit), 2500.0, 5.0);
  for (int i = 0; i < 30; i++) limit = NextLimit(limit, limit, limit / 10, 10000, 1.0);  // fast rows
  EXPECT_EQ(limit, 10000);
  // A very slow batch shrinks the next, never below the floor.
  for (int i = 0; i < 20; i++) limit = NextLimit(limit, limit, limit * 1000, 10000, 1.0);
  EXPECT_EQ(limit, kMinLimit);
  // A short batch (the last one) keeps the limit.
  EXPECT_EQ(NextLimit(800, 0, 300, 10000, 1.0), 800);
}

TEST(SweepPacing, TheTargetRateFollowsTheClaimsAboveAFloor) {
  using namespace pgi::sweeper::pacing;
  EXPECT_EQ(TargetRate(std::nullopt), kFloorRowsPerSecond) << "not measured yet: the floor";
  EXPECT_EQ(TargetRate(0.0), 0) << "nobody claims: no limit but the throttle";
  EXPECT_EQ(TargetRate(10.0), kFloorRowsPerSecond);
  EXPECT_EQ(TargetRate(2000.0), kRowsPerClaim * 2000);
  EXPECT_GE(kRowsPerClaim, 10) << "the sweeper must keep at least 10 times the claim rate";
}

TEST(SweepPacing, TheClaimRateIsMeasuredOverAWindow) {
  using namespace pgi::sweeper::pacing;
  ClaimRate rate;
  EXPECT_FALSE(rate.Update(0, 1000)) << "one reading is no rate";
  EXPECT_FALSE(rate.Update(kRateWindowUs / 2, 1500)) << "too soon";
  EXPECT_DOUBLE_EQ(*rate.Update(kSecond, 3000), 2000);
  EXPECT_DOUBLE_EQ(*rate.Update(kSecond + 10, 9000), 2000) << "kept until a window has passed";
  EXPECT_DOUBLE_EQ(*rate.Update(2 * kSecond, 1000), 2000) << "counters reset (a restart): starts again";
  EXPECT_DOUBLE_EQ(*rate.Update(3 * kSecond, 1500), 500);
}

TEST(SweepPacing, DeletionsKeepToTheRateWithoutBursts) {
  using namespace pgi::sweeper::pacing;
  RatePacer pacer;
  EXPECT_EQ(pacer.PauseAfter(kSecond, 100, 0), 0) << "no rate: no pause";
  // 40k rows/s, batches of 2000 rows taking 5 ms: each pause makes up to 50 ms.
  RatePacer steady;
  std::int64_t now = 10 * kSecond, rows = 0;
  const std::int64_t start = now;
  for (int i = 0; i < 200; i++) {
    now += 5'000;
    rows += 2000;
    now += steady.PauseAfter(now, 2000, 40'000);
  }
  EXPECT_NEAR(static_cast<double>(rows) * 1e6 / static_cast<double>(now - start), 40'000, 40'000 * 0.03);
  // After a long stall (the machine busy for 2 s) the worker does not sweep
  // the 2 s it owes back to back: only kRateSlackUs of them.
  now += 2 * kSecond;
  std::int64_t unpaused = 0;
  while (steady.PauseAfter(now, 2000, 40'000) == 0) unpaused += 2000;
  EXPECT_LE(unpaused, 40'000 * kRateSlackUs / kSecond);
  EXPECT_LE(pacer.PauseAfter(kSecond, 10'000'000, 1), kSecond) << "one pause lasts a second at most";
}

}  // namespace
