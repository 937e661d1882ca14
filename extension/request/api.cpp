// The SQL-callable functions: argument checks, the key lock, the keys table
// and the claim decision, glued together. Each entry point is one Guard().
#include <algorithm>
#include <optional>
#include <string>

#include "keys/keys.hpp"
#include "pg/args.hpp"
#include "pg/boundary.hpp"
#include "pg/settings.hpp"
#include "pg/stats.hpp"
#include "request/claim_result.hpp"
#include "request/decide.hpp"
#include "request/key_lock.hpp"
#include "request/replicated_shards.hpp"
#include "request/standby.hpp"
#include "request/token.hpp"

#include "pg/pg_headers.hpp"

namespace pgi {
namespace {

constexpr int ERRCODE_TOKEN_NOT_HOLDER = MAKE_SQLSTATE('I', 'K', '0', '0', '1');
constexpr int ERRCODE_DIFFERENT_RESPONSE = MAKE_SQLSTATE('I', 'K', '0', '0', '2');
constexpr int kClaimAttempts = 3;
constexpr const char* kClaimWritesDetail =
    "The key is new, expired or its lease is over: claiming it writes, and this server is in recovery (a read "
    "replica).";

using claim_result::Outcome;

// All times come from the database clock: the transaction's now().
TimestampTz Now() { return GetCurrentTransactionStartTimestamp(); }

bool SameBytes(const bytea* a, const bytea* b) {
  return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
         memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

decide::Fingerprints CompareFingerprints(const bytea* stored, const bytea* given) {
  if (stored == nullptr || given == nullptr) return decide::Fingerprints::Unchecked;
  return SameBytes(stored, given) ? decide::Fingerprints::Same : decide::Fingerprints::Different;
}

std::optional<decide::Row> AsDecideRow(const keys::KeyRow& row, const bytea* fingerprint) {
  if (!row.found) return std::nullopt;
  decide::Row facts;
  facts.completed = row.completed;
  facts.expires_at = row.expires_at;
  if (row.has_locked_until) facts.locked_until = row.locked_until;
  facts.fingerprints = CompareFingerprints(row.fingerprint, fingerprint);
  return facts;
}

claim_result::Fields NoFields(Outcome outcome) {
  claim_result::Fields fields{};
  fields.outcome = outcome;
  return fields;
}

claim_result::Fields ReplayOf(const keys::KeyRow& row) {
  auto fields = NoFields(Outcome::Replay);
  fields.has_attempt = true;
  fields.attempt = row.attempt;
  fields.recovery_point = row.recovery_point;
  fields.has_response_status = row.has_response_status;
  fields.response_status = row.response_status;
  fields.response_headers = row.response_headers;
  fields.response_body = row.response_body;
  fields.has_expires_at = true;
  fields.expires_at = row.expires_at;
  fields.trace_context = row.trace_context;  // the link to the request that did the work
  return fields;
}

// in_progress: what is known of the holder, if its row is visible at all.
claim_result::Fields InProgressOf(const keys::KeyRow& row, TimestampTz now) {
  auto fields = NoFields(Outcome::InProgress);
  if (!row.found || row.expires_at <= now) return fields;
  fields.has_attempt = true;
  fields.attempt = row.attempt;
  fields.has_expires_at = true;
  fields.expires_at = row.expires_at;
  fields.has_locked_until = row.has_locked_until;
  fields.locked_until = row.locked_until;
  fields.trace_context = row.trace_context;  // the holder's request
  return fields;
}

claim_result::Fields Answer(decide::Verdict verdict, const keys::KeyRow& row, TimestampTz now) {
  switch (verdict) {
    case decide::Verdict::Mismatch:
      return NoFields(Outcome::Mismatch);
    case decide::Verdict::Replay:
      return ReplayOf(row);
    case decide::Verdict::InProgress:
    case decide::Verdict::Acquire:
      break;
  }
  return InProgressOf(row, now);
}

void Count(Outcome outcome, int32 attempt) {
  switch (outcome) {
    case Outcome::Claimed:
      stats::Add(stats::Counter::Claims);
      if (attempt > 1) stats::Add(stats::Counter::Takeovers);
      break;
    case Outcome::Replay:
      stats::Add(stats::Counter::Replays);
      break;
    case Outcome::InProgress:
      stats::Add(stats::Counter::InProgress);
      break;
    case Outcome::Mismatch:
      stats::Add(stats::Counter::Mismatches);
      break;
  }
}

// Takes the key (new, expired or lease over) once the key lock is held; when
// the row turns out to be live and not ours, answers for what it is. A new key
// is one plain INSERT; only an existing row goes through the takeover UPDATE,
// whose row wait is bounded by the caller's wait: a sweep deleting that
// expired row is the one writer that does not take the key lock.
// wait_until: when the caller's wait ends (0: no wait). The key-lock wait
// and the row waits share that one budget.
// traced: the database is at 1.2 (claim has its trace_context argument, the
// table its column); trace_context is then stored on every claim.
claim_result::Fields ClaimLocked(const args::KeyRef& key, bytea* fingerprint, TimestampTz now, TimestampTz expires_at,
                                 TimestampTz locked_until, const keys::KeyRow& seen, TimestampTz wait_until,
                                 bool traced, text* trace_context, keys::Link& spi) {
  keys::KeyRow row = seen;
  // The first look saw no row, under the statement's snapshot. A holder may
  // have committed one since (and ended, or we would not hold the key lock):
  // a dirty probe sees it, and then the row decides as below. When the probe
  // finds nothing, nobody can add one while we hold the key lock, and the new
  // key is a plain INSERT (no speculative insertion).
  bool absent = false;
  if (!row.found) {
    switch (keys::Probe(key)) {
      case keys::Presence::Absent:
        absent = true;
        break;
      case keys::Presence::Present: {
        row = keys::Read(key, spi, traced);
        const auto verdict = decide::Judge(AsDecideRow(row, fingerprint), now);
        if (verdict != decide::Verdict::Acquire) return Answer(verdict, row, now);
        break;
      }
      case keys::Presence::Unknown:
        break;
    }
  }
  for (int attempt = 0; attempt < kClaimAttempts; attempt++) {
    const int64 left_us = wait_until == 0 ? 0 : std::max<int64>(0, wait_until - GetCurrentTimestamp());
    const int row_wait_ms = static_cast<int>(std::min<int64>(left_us / 1000, INT_MAX));
    const keys::NewClaim claim{fingerprint, token::New(), now, expires_at, locked_until, traced, trace_context};
    // Where Citus would refuse the takeover's row lock, our error says why.
    if (row.found)
      replicated_shards::RefuseTakeover("take over", key);
    else
      replicated_shards::WarnOnNewKey();
    const keys::ClaimedRow claimed = row.found ? keys::TakeOver(key, claim, row_wait_ms, spi)
                                     : absent  ? keys::InsertAbsent(key, claim, spi)
                                               : keys::Insert(key, claim, spi);
    absent = false;  // a second round knows nothing of the sort
    if (claimed.timed_out) return InProgressOf(row, now);
    if (claimed.claimed) {
      auto fields = NoFields(Outcome::Claimed);
      fields.has_token = true;
      fields.token = claim.token;
      fields.has_attempt = true;
      fields.attempt = claimed.attempt;
      fields.recovery_point = claimed.recovery_point;
      fields.has_expires_at = true;
      fields.expires_at = claimed.expires_at;
      fields.has_locked_until = true;
      fields.locked_until = claimed.locked_until;
      fields.trace_context = trace_context;
      return fields;
    }
    // The row is not what the first look saw (committed or swept since):
    // look again and answer for it, or go again.
    row = keys::Read(key, spi, traced);
    const auto verdict = decide::Judge(AsDecideRow(row, fingerprint), now);
    if (verdict != decide::Verdict::Acquire) return Answer(verdict, row, now);
  }
  return InProgressOf(row, now);
}

Datum Claim(FunctionCallInfo fcinfo) {
  const args::KeyRef key = args::Key(fcinfo);
  bytea* fingerprint = args::OptionalFingerprint(fcinfo, 2, key);
  const Interval ttl =
      args::PositiveInterval(fcinfo, 3, "ttl", int64{settings::DefaultTtlSeconds()} * USECS_PER_SEC, &key);
  const Interval lease = args::PositiveInterval(fcinfo, 4, "lease", int64{settings::DefaultLeaseMs()} * 1000, &key);
  const int64 wait_us = args::NonNegativeIntervalUs(fcinfo, 5, "wait", key);
  // 1.2's seventh argument; a database still at 1.0 or 1.1 (rolling upgrade)
  // calls with six and has no trace_context column. A 1.2 call comes with
  // seven, or fewer when claim_support.cpp dropped trailing defaults (never six).
  const bool traced = PG_NARGS() != 6;
  text* trace_context = args::OptionalTraceContext(fcinfo, 6, key);
  // The wait is measured on the wall clock from here (now() is the
  // transaction's start); wait_us is saturated well below overflow.
  const TimestampTz wait_until = wait_us > 0 ? GetCurrentTimestamp() + wait_us : 0;
  const TimestampTz now = Now();
  const TimestampTz expires_at = args::AddInterval(now, ttl, "ttl", key);
  const TimestampTz locked_until = args::AddInterval(now, lease, "lease", key);
  MemoryContext caller_context = CurrentMemoryContext;

  // First look, read-only: replays and mismatches answer here without a lock,
  // a row lock, an xid or WAL; where it is safe, without SPI at all (a direct
  // primary-key probe, keys.hpp). SPI is connected only when needed.
  keys::Link spi;
  const keys::KeyRow seen = keys::FirstLook(key, spi, traced);
  const auto verdict = decide::Judge(AsDecideRow(seen, fingerprint), now);
  claim_result::Fields fields;
  // Only a claim that must write refuses on a hot standby, before the key lock.
  if (verdict == decide::Verdict::Acquire) standby::RequirePrimary("claim", &key, kClaimWritesDetail);
  if (verdict != decide::Verdict::Acquire) {
    fields = Answer(verdict, seen, now);
  } else if (!key_lock::TryAcquire(key, wait_us)) {
    fields = InProgressOf(seen, now);  // another open transaction is on it
  } else {
    fields = ClaimLocked(key, fingerprint, now, expires_at, locked_until, seen, wait_until, traced, trace_context, spi);
  }
  const Datum result = claim_result::Build(fcinfo, fields, caller_context);
  spi.Done();
  Count(fields.outcome, fields.attempt);
  return result;
}

[[noreturn]] void ThrowNotHolder(const args::KeyRef& key, int64 token, const keys::KeyRow& row, TimestampTz now) {
  std::string why;
  if (!row.found)
    why = "No such key exists (never claimed, released, or swept).";
  else if (row.expires_at <= now)
    why = "The key has expired.";
  else if (row.token != token && row.completed)
    why = "Another holder completed the key.";
  else if (row.token != token)
    why = "Another claim holds the key (attempt " + std::to_string(row.attempt) +
          "); a holder whose lease ran out loses the key to the next claim.";
  else
    why = "The key is already completed.";
  throw Error(ERRCODE_TOKEN_NOT_HOLDER, "idempotency " + args::Describe(key) + " is not held by the given token",
              "Token " + std::to_string(token) + ": " + why,
              "Do not store a result for this request: claim the key again and act on the answer.");
}

int64 TokenArg(FunctionCallInfo fcinfo, const args::KeyRef& key) {
  args::RequireNotNull(fcinfo, 2, "token", &key);
  return PG_GETARG_INT64(2);
}

// Which parts of a finish's response differ from the stored one: IK002's detail
// names them, since the status alone often matches.
struct ResponseDifference {
  bool status = false;
  bool body = false;
  bool headers = false;
  bool Any() const { return status || body || headers; }
};

ResponseDifference CompareResponse(const keys::KeyRow& row, const keys::Response& response) {
  ResponseDifference d;
  d.status = !row.has_response_status || row.response_status != response.status;
  d.body = (row.response_body == 0) != (response.body == nullptr);
  d.headers = (row.response_headers == 0) != (response.headers == nullptr);
  PgCall([&] {
    if (!d.body && response.body != nullptr) d.body = !SameBytes(DatumGetByteaPP(row.response_body), response.body);
    if (!d.headers && response.headers != nullptr)
      d.headers = !DatumGetBool(DirectFunctionCall2(jsonb_eq, row.response_headers, PointerGetDatum(response.headers)));
  });
  return d;
}

// "Token 7 stored status 201; this call's status (500) and body differ."
std::string DifferenceDetail(int64 token, const keys::KeyRow& row, const keys::Response& response,
                             const ResponseDifference& d) {
  std::string parts[3];
  int n = 0;
  if (d.status) parts[n++] = "status (" + std::to_string(response.status) + ")";
  if (d.body) parts[n++] = "body";
  if (d.headers) parts[n++] = "headers";
  std::string list = parts[0];
  for (int i = 1; i < n; ++i) list += (i == n - 1 ? " and " : ", ") + parts[i];
  return "Token " + std::to_string(token) + " stored status " + std::to_string(row.response_status) +
         "; this call's " + list + (n == 1 && !d.headers ? " differs." : " differ.");
}

Datum Finish(FunctionCallInfo fcinfo) {
  const args::KeyRef key = args::Key(fcinfo);
  const int64 token = TokenArg(fcinfo, key);
  args::RequireNotNull(fcinfo, 3, "response_status", &key);
  keys::Response response{PG_GETARG_INT32(3), nullptr, nullptr};
  PgCall([&] {
    if (!PG_ARGISNULL(4)) response.body = PG_GETARG_BYTEA_PP(4);
    if (PG_NARGS() > 5 && !PG_ARGISNULL(5)) response.headers = PG_GETARG_JSONB_P(5);
  });
  const int64 size = (response.body ? VARSIZE_ANY_EXHDR(response.body) : 0) +
                     (response.headers ? VARSIZE_ANY_EXHDR(response.headers) : 0);
  if (size > settings::MaxResponseBytes())
    throw Error(ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                "response for idempotency " + args::Describe(key) + " is " + std::to_string(size) +
                    " bytes, more than idempotency.max_response_size (" + std::to_string(settings::MaxResponseBytes()) +
                    " bytes)",
                {},
                "Store a smaller response (for example a reference to it), or raise idempotency.max_response_size.");

  standby::RequirePrimary("finish", &key);
  const TimestampTz now = Now();
  key_lock::Acquire(key);
  keys::Link spi;
  const bool stored = keys::Complete(key, token, now, response, spi);
  if (!stored) {
    const keys::KeyRow row = keys::Read(key, spi);
    if (!row.found || row.expires_at <= now || row.token != token || !row.completed)
      ThrowNotHolder(key, token, row, now);
    const ResponseDifference difference = CompareResponse(row, response);
    if (difference.Any())
      throw Error(ERRCODE_DIFFERENT_RESPONSE,
                  "idempotency " + args::Describe(key) + " was already finished with a different response",
                  DifferenceDetail(token, row, response, difference),
                  "A request's response is stored once; replay the stored one instead of finishing again.");
  }
  spi.Done();
  if (stored) stats::Add(stats::Counter::Finishes);
  return BoolGetDatum(stored);
}

Datum Checkpoint(FunctionCallInfo fcinfo) {
  const args::KeyRef key = args::Key(fcinfo);
  const int64 token = TokenArg(fcinfo, key);
  text* recovery_point = nullptr;
  PgCall([&] {
    if (!PG_ARGISNULL(3)) recovery_point = PG_GETARG_TEXT_PP(3);
  });
  const Interval lease = args::PositiveInterval(fcinfo, 4, "lease", int64{settings::DefaultLeaseMs()} * 1000, &key);
  const TimestampTz now = Now();
  const TimestampTz locked_until = args::AddInterval(now, lease, "lease", key);
  standby::RequirePrimary("checkpoint", &key);
  key_lock::Acquire(key);
  keys::Link spi;
  if (!keys::Checkpoint(key, token, now, recovery_point, locked_until, spi))
    ThrowNotHolder(key, token, keys::Read(key, spi), now);
  spi.Done();
  return TimestampTzGetDatum(locked_until);
}

Datum Release(FunctionCallInfo fcinfo) {
  const args::KeyRef key = args::Key(fcinfo);
  const int64 token = TokenArg(fcinfo, key);
  standby::RequirePrimary("release", &key);
  const TimestampTz now = Now();
  key_lock::Acquire(key);
  keys::Link spi;
  if (!keys::Release(key, token, now, spi)) ThrowNotHolder(key, token, keys::Read(key, spi), now);
  spi.Done();
  stats::Add(stats::Counter::Releases);
  return BoolGetDatum(true);
}

Datum Lookup(FunctionCallInfo fcinfo) {
  const args::KeyRef key = args::Key(fcinfo);
  MemoryContext caller_context = CurrentMemoryContext;
  keys::Link spi;
  const Datum row = keys::LookupLive(key, Now(), caller_context, spi);
  spi.Done();
  if (row == 0) PG_RETURN_NULL();
  return row;
}

Datum Sweep(FunctionCallInfo fcinfo) {
  int64 limit = settings::SweepBatchSize();
  if (!PG_ARGISNULL(0)) {
    limit = PG_GETARG_INT32(0);
    if (limit <= 0)
      throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "batch_size must be positive, not " + std::to_string(limit), {},
                  "Pass how many expired keys to delete at most, or NULL for idempotency.sweep_batch_size.");
  }
  standby::RequirePrimary("sweep", nullptr);
  keys::Link spi;
  const uint64 deleted = keys::SweepExpired(Now(), limit, spi);
  spi.Done();
  stats::Add(stats::Counter::Swept, deleted);
  stats::NoteSweep();
  return Int64GetDatum(static_cast<int64>(deleted));
}

}  // namespace
}  // namespace pgi

PGI_SQL_FUNCTION(idempotency_claim) {
  return pgi::Guard([&] { return pgi::Claim(fcinfo); });
}
PGI_SQL_FUNCTION(idempotency_finish) {
  return pgi::Guard([&] { return pgi::Finish(fcinfo); });
}
PGI_SQL_FUNCTION(idempotency_checkpoint) {
  return pgi::Guard([&] { return pgi::Checkpoint(fcinfo); });
}
PGI_SQL_FUNCTION(idempotency_release) {
  return pgi::Guard([&] { return pgi::Release(fcinfo); });
}
PGI_SQL_FUNCTION(idempotency_lookup) {
  return pgi::Guard([&] { return pgi::Lookup(fcinfo); });
}
PGI_SQL_FUNCTION(idempotency_sweep) {
  return pgi::Guard([&] { return pgi::Sweep(fcinfo); });
}
