// Unit tests of claim's decision (extension/decide.cpp): every row of the
// contract's claim table as a pure function, no server needed. The SQL-level
// tests (test/sql/01_claim.sql, test/specs) cover the same rows end to end.
#include "decide.hpp"

#include <gtest/gtest.h>

namespace {

using pgi::decide::Fingerprints;
using pgi::decide::IsTakeover;
using pgi::decide::Judge;
using pgi::decide::Micros;
using pgi::decide::Row;
using pgi::decide::Verdict;

constexpr Micros kNow = 1'000'000'000;
constexpr Micros kSecond = 1'000'000;

Row InProgress(Micros lease_end, Fingerprints fp = Fingerprints::Unchecked) {
  Row row;
  row.completed = false;
  row.expires_at = kNow + 3600 * kSecond;
  row.locked_until = lease_end;
  row.fingerprints = fp;
  return row;
}

Row Completed(Fingerprints fp = Fingerprints::Unchecked) {
  Row row;
  row.completed = true;
  row.expires_at = kNow + 3600 * kSecond;
  row.fingerprints = fp;
  return row;
}

TEST(Decide, AbsentKeyIsAcquired) {
  EXPECT_EQ(Judge(std::nullopt, kNow), Verdict::Acquire);
  EXPECT_FALSE(IsTakeover(std::nullopt, kNow));
}

TEST(Decide, ExpiredRowsBehaveAsAbsent) {
  Row done = Completed(Fingerprints::Different);
  done.expires_at = kNow;  // expiry is inclusive: expires_at <= now is gone
  EXPECT_EQ(Judge(done, kNow), Verdict::Acquire);
  EXPECT_FALSE(IsTakeover(done, kNow));
  Row open = InProgress(kNow + 60 * kSecond);
  open.expires_at = kNow - 1;
  EXPECT_EQ(Judge(open, kNow), Verdict::Acquire);
  EXPECT_FALSE(IsTakeover(open, kNow));
}

TEST(Decide, CompletedIsReplay) {
  EXPECT_EQ(Judge(Completed(), kNow), Verdict::Replay);
  EXPECT_EQ(Judge(Completed(Fingerprints::Same), kNow), Verdict::Replay);
}

TEST(Decide, RunningLeaseIsInProgress) {
  EXPECT_EQ(Judge(InProgress(kNow + 1), kNow), Verdict::InProgress);
  EXPECT_EQ(Judge(InProgress(kNow + 60 * kSecond, Fingerprints::Same), kNow), Verdict::InProgress);
}

TEST(Decide, LeaseOverIsTakeover) {
  const Row row = InProgress(kNow);  // lease end is inclusive too
  EXPECT_EQ(Judge(row, kNow), Verdict::Acquire);
  EXPECT_TRUE(IsTakeover(row, kNow));
  Row no_lease = InProgress(0);
  no_lease.locked_until.reset();
  EXPECT_EQ(Judge(no_lease, kNow), Verdict::Acquire);
}

TEST(Decide, MismatchTakesPrecedence) {
  EXPECT_EQ(Judge(Completed(Fingerprints::Different), kNow), Verdict::Mismatch);
  EXPECT_EQ(Judge(InProgress(kNow + 60 * kSecond, Fingerprints::Different), kNow), Verdict::Mismatch);
  EXPECT_EQ(Judge(InProgress(kNow - kSecond, Fingerprints::Different), kNow), Verdict::Mismatch);
}

TEST(Decide, UncheckedFingerprintsNeverMismatch) {
  EXPECT_EQ(Judge(Completed(Fingerprints::Unchecked), kNow), Verdict::Replay);
  EXPECT_EQ(Judge(InProgress(kNow - kSecond, Fingerprints::Unchecked), kNow), Verdict::Acquire);
}

}  // namespace
