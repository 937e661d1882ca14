// once(scope, key, ttl, wait): claim + finish in one call, for idempotent
// consumers (messages, webhooks, jobs delivered more than once).
//
// It reuses claim's parts: the read-only first look (keys::FirstLook), the claim
// table (decide::Judge, never a mismatch: once() has no fingerprint), the key
// lock, and keys.hpp's writes that record the key completed at once. The
// one rule of its own: a key another transaction may still commit or roll
// back is never answered "already done" (false) but 55P03, so a consumer never
// acknowledges a message whose processing could yet be undone.
#include <algorithm>
#include <optional>
#include <string>

#include "keys/keys.hpp"
#include "pg/args.hpp"
#include "pg/boundary.hpp"
#include "pg/settings.hpp"
#include "pg/stats.hpp"
#include "request/decide.hpp"
#include "request/key_lock.hpp"
#include "request/replicated_shards.hpp"
#include "request/standby.hpp"
#include "request/token.hpp"

#include "pg/pg_headers.hpp"

namespace pgi {
namespace {

// Writes attempted before giving up on a key that keeps changing under us
// (only a concurrent sweep can do that while we hold the key lock).
constexpr int kWriteAttempts = 3;
// While waiting on a committed in_progress row (a claim() holder whose lease
// is running) there is no lock to wait on: look again this often.
constexpr int64 kPollUs = 50 * 1000;

enum class Answer { First, Done, Held };

struct Result {
  Answer answer;
  int32 attempt;  // of the recorded row, when First
  bool leased;    // Held by a committed claim() whose lease runs until locked_until
  TimestampTz locked_until;
};

int64 LeftUs(TimestampTz wait_until) {
  return wait_until == 0 ? 0 : std::max<int64>(0, wait_until - GetCurrentTimestamp());
}

int ToMs(int64 us) { return static_cast<int>(std::min<int64>((us + 999) / 1000, INT_MAX)); }

// Sleeps a poll interval (or what is left of the wait); false when no wait is left.
bool Nap(TimestampTz wait_until) {
  const int64 left_us = LeftUs(wait_until);
  if (left_us <= 0) return false;
  const long timeout_ms = std::max(1, ToMs(std::min(left_us, kPollUs)));
  PgCall([&] {
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
  });
  return true;
}

std::optional<decide::Row> AsDecideRow(const keys::KeyRow& row) {
  if (!row.found) return std::nullopt;
  decide::Row facts;
  facts.completed = row.completed;
  facts.expires_at = row.expires_at;
  if (row.has_locked_until) facts.locked_until = row.locked_until;
  return facts;  // fingerprints Unchecked: once() never answers mismatch
}

Result Decide(const args::KeyRef& key, TimestampTz now, TimestampTz expires_at, int64 wait_us, TimestampTz wait_until,
              keys::Link& spi) {
  // First look, read-only: a processed key answers here without a lock or an xid.
  keys::KeyRow row = keys::FirstLook(key, spi);
  bool locked = false;
  for (int writes = 0;;) {
    switch (decide::Judge(AsDecideRow(row), now)) {
      case decide::Verdict::Replay:
      case decide::Verdict::Mismatch:  // unreachable without a fingerprint
        return {Answer::Done, 0};
      case decide::Verdict::InProgress:
        // A committed claim() holds it with a running lease: it may finish
        // (false) or release it; wait for either while the wait lasts.
        if (!Nap(wait_until)) return {Answer::Held, 0, true, row.locked_until};
        row = keys::Read(key, spi);
        continue;
      case decide::Verdict::Acquire:
        break;
    }
    // Absent, expired or lease over: take the key lock, which waits for an
    // open transaction working on the same key.
    if (!locked) {
      if (!key_lock::TryAcquire(key, wait_us == 0 ? 0 : std::max<int64>(1, LeftUs(wait_until))))
        return {Answer::Held, 0};
      locked = true;
    }
    if (writes++ == kWriteAttempts) return {Answer::Held, 0};
    // A takeover on a database at 1.2 clears the old claimer's trace_context
    // (once() has none of its own): a replay must not link to a request that
    // did not do the work. A new key has none to clear.
    const bool traced = row.found && keys::StoresTraceContext();
    const keys::NewClaim claim{nullptr, token::New(), now, expires_at, 0, traced, nullptr};
    // No row seen: a new key, by a plain insert when a probe that also sees
    // uncommitted rows finds none (nobody can add one while we hold the key
    // lock), else with ON CONFLICT.
    if (row.found)
      replicated_shards::RefuseTakeover("process", key);
    else
      replicated_shards::WarnOnNewKey();
    const keys::ClaimedRow written = row.found ? keys::TakeOverCompleted(key, claim, ToMs(LeftUs(wait_until)), spi)
                                               : keys::InsertCompleted(key, claim, spi);
    if (written.timed_out) return {Answer::Held, 0};
    if (written.claimed) return {Answer::First, written.attempt};
    // Someone else's row is there now (committed since the first look): look
    // again, under a fresh snapshot, and answer for it.
    row = keys::Read(key, spi);
  }
}

[[noreturn]] void ThrowHeld(const args::KeyRef& key, int64 wait_us, const Result& result) {
  const std::string waited = wait_us == 0 ? std::string("once() was called without a wait.")
                                          : "It was still held after waiting " + std::to_string(ToMs(wait_us)) + " ms.";
  const std::string holder = result.leased
                                 ? " A claim holds it in_progress with a lease running until " +
                                       std::string(PgCall([&] { return timestamptz_to_str(result.locked_until); })) +
                                       "; it may still finish or release it."
                                 : " That transaction may still commit or roll back.";
  throw Error(ERRCODE_LOCK_NOT_AVAILABLE,
              "idempotency " + args::Describe(key) + " is being processed by another transaction",
              waited + holder + " Whether the key was processed is not known yet.",
              "Do not acknowledge the message: let it be delivered again, or call once() with a longer wait.");
}

Datum Once(FunctionCallInfo fcinfo) {
  const args::KeyRef key = args::Key(fcinfo);
  const Interval ttl =
      args::PositiveInterval(fcinfo, 2, "ttl", int64{settings::DefaultTtlSeconds()} * USECS_PER_SEC, &key);
  const int64 wait_us = args::NonNegativeIntervalUs(fcinfo, 3, "wait", key);
  // The wait runs on the wall clock from here; every other time is now().
  const TimestampTz wait_until = wait_us > 0 ? GetCurrentTimestamp() + wait_us : 0;
  const TimestampTz now = GetCurrentTransactionStartTimestamp();
  const TimestampTz expires_at = args::AddInterval(now, ttl, "ttl", key);
  // Every call may have to record the key: a standby refuses them all alike.
  standby::RequirePrimary("process", &key,
                          "once() records the key it processes, and this server is in recovery (a read replica).");

  keys::Link spi;
  const Result result = Decide(key, now, expires_at, wait_us, wait_until, spi);
  spi.Done();

  switch (result.answer) {
    case Answer::First:
      stats::Add(stats::Counter::Claims);
      if (result.attempt > 1) stats::Add(stats::Counter::Takeovers);
      stats::Add(stats::Counter::Finishes);
      return BoolGetDatum(true);
    case Answer::Done:
      stats::Add(stats::Counter::Replays);
      return BoolGetDatum(false);
    case Answer::Held:
      break;
  }
  stats::Add(stats::Counter::InProgress);
  ThrowHeld(key, wait_us, result);
}

}  // namespace
}  // namespace pgi

PGI_SQL_FUNCTION(idempotency_once) {
  return pgi::Guard([&] { return pgi::Once(fcinfo); });
}
