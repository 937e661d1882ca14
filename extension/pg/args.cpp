#include "pg/args.hpp"

#include <string>

#include "pg/boundary.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "mb/pg_wchar.h"
}

namespace pgi::args {
namespace {

constexpr int kQuotedBytes = 64;  // how much of a long scope/key a message quotes

std::string TextToString(const text* t) { return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)); }

// At most max_bytes of t, cut at a character boundary: a message must stay
// valid in the database encoding even when it quotes a long multibyte key.
std::string Clip(const text* t, int max_bytes) {
  const int bytes = VARSIZE_ANY_EXHDR(t);
  if (bytes <= max_bytes) return TextToString(t);
  const int keep = PgCall([&] { return pg_mbcliplen(VARDATA_ANY(t), bytes, max_bytes); });
  return std::string(VARDATA_ANY(t), keep);
}

// Detoasts argument argno (a varlena) inside PgCall.
struct varlena* Detoast(FunctionCallInfo fcinfo, int argno) {
  return PgCall([&] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(argno)); });
}

bool BadLength(const text* value) {
  const auto bytes = VARSIZE_ANY_EXHDR(value);
  return bytes == 0 || bytes > kMaxKeyBytes;
}

void CheckLength(const text* value, const char* name, const std::string& context) {
  const auto bytes = VARSIZE_ANY_EXHDR(value);
  if (bytes == 0)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, std::string("idempotency ") + name + " must not be empty", context,
                "Pass a non-empty value of at most 255 bytes.");
  if (bytes > kMaxKeyBytes)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                std::string("idempotency ") + name + " is " + std::to_string(bytes) + " bytes long, more than " +
                    std::to_string(kMaxKeyBytes),
                context, "Use a shorter value, for example a UUID or a digest of the long one.");
}

}  // namespace

std::string Describe(const KeyRef& key) {
  return "key \"" + TextToString(key.key) + "\" in scope \"" + TextToString(key.scope) + "\"";
}

KeyRef Key(FunctionCallInfo fcinfo) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) {
    // Name whichever of the two was given.
    std::string detail;
    if (!PG_ARGISNULL(1))
      detail = "The key is \"" + Clip(reinterpret_cast<text*>(Detoast(fcinfo, 1)), kQuotedBytes) + "\".";
    else if (!PG_ARGISNULL(0))
      detail = "The scope is \"" + Clip(reinterpret_cast<text*>(Detoast(fcinfo, 0)), kQuotedBytes) + "\".";
    throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                std::string("idempotency ") + (PG_ARGISNULL(0) ? "scope" : "key") + " must not be NULL", detail,
                "Pass the scope (tenant, user or endpoint) and the client's idempotency key.");
  }
  KeyRef ref{reinterpret_cast<text*>(Detoast(fcinfo, 0)), reinterpret_cast<text*>(Detoast(fcinfo, 1))};
  // The messages are built only for a bad length: every call comes through here.
  if (BadLength(ref.scope))
    CheckLength(ref.scope, "scope",
                "The scope is \"" + Clip(ref.scope, kQuotedBytes) + "\" (key \"" + Clip(ref.key, kQuotedBytes) + "\").");
  if (BadLength(ref.key))
    CheckLength(ref.key, "key",
                "The key is \"" + Clip(ref.key, kQuotedBytes) + "\" in scope \"" + Clip(ref.scope, kQuotedBytes) + "\".");
  return ref;
}

bytea* OptionalFingerprint(FunctionCallInfo fcinfo, int argno, const KeyRef& key) {
  if (PG_NARGS() <= argno || PG_ARGISNULL(argno)) return nullptr;
  auto* fingerprint = reinterpret_cast<bytea*>(Detoast(fcinfo, argno));
  const auto bytes = VARSIZE_ANY_EXHDR(fingerprint);
  if (bytes > kMaxFingerprintBytes)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                "fingerprint for " + Describe(key) + " is " + std::to_string(bytes) + " bytes, more than " +
                    std::to_string(kMaxFingerprintBytes),
                {}, "Pass a digest of the request, such as idempotency.fingerprint(request_json).");
  return fingerprint;
}

namespace {

bool LowerHex(const char* s, int n, bool* all_zero) {
  *all_zero = true;
  for (int i = 0; i < n; i++) {
    const char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    if (c != '0') *all_zero = false;
  }
  return true;
}

// version "-" trace-id "-" parent-id "-" flags, as W3C Trace Context level 1
// defines version 00 (a later version's extra fields are refused: strict).
bool IsTraceparent(const char* s, int bytes) {
  if (bytes != kTraceparentBytes || s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
  bool zero = false;
  if (!LowerHex(s, 2, &zero) || (s[0] == 'f' && s[1] == 'f')) return false;
  if (!LowerHex(s + 3, 32, &zero) || zero) return false;
  if (!LowerHex(s + 36, 16, &zero) || zero) return false;
  return LowerHex(s + 53, 2, &zero);
}

}  // namespace

text* OptionalTraceContext(FunctionCallInfo fcinfo, int argno, const KeyRef& key) {
  if (PG_NARGS() <= argno || PG_ARGISNULL(argno)) return nullptr;
  auto* trace = reinterpret_cast<text*>(Detoast(fcinfo, argno));
  const int bytes = VARSIZE_ANY_EXHDR(trace);
  if (!IsTraceparent(VARDATA_ANY(trace), bytes))
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                "trace_context for " + Describe(key) + " is not a W3C traceparent",
                "The value is \"" + Clip(trace, kQuotedBytes) + "\" (" + std::to_string(bytes) + " bytes).",
                "Pass the request's traceparent header, for example "
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, or NULL.");
  return trace;
}

void RequireNotNull(FunctionCallInfo fcinfo, int argno, const char* name, const KeyRef* key) {
  if (PG_NARGS() > argno && !PG_ARGISNULL(argno)) return;
  throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED,
              std::string(name) + " must not be NULL" + (key ? " for " + Describe(*key) : std::string()));
}

Interval PositiveInterval(FunctionCallInfo fcinfo, int argno, const char* name, int64 fallback_us, const KeyRef* key) {
  Interval result{};
  if (PG_NARGS() <= argno || PG_ARGISNULL(argno)) {
    result.time = fallback_us;
    return result;
  }
  result = *PG_GETARG_INTERVAL_P(argno);
  Interval zero{};
  const bool positive = PgCall([&] {
    return DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(&result), IntervalPGetDatum(&zero))) > 0;
  });
  if (!positive)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                std::string(name) + " must be positive" + (key ? " for " + Describe(*key) : std::string()), {},
                std::string("Pass a positive interval such as '30 seconds', or NULL for the default."));
  return result;
}

int64 NonNegativeIntervalUs(FunctionCallInfo fcinfo, int argno, const char* name, const KeyRef& key) {
  if (PG_NARGS() <= argno || PG_ARGISNULL(argno)) return 0;
  const Interval* interval = PG_GETARG_INTERVAL_P(argno);
  // Months and days as PostgreSQL's interval comparison counts them; saturate
  // rather than overflow for absurd values.
  const long double us = static_cast<long double>(interval->time) +
                         static_cast<long double>(interval->day) * USECS_PER_DAY +
                         static_cast<long double>(interval->month) * DAYS_PER_MONTH * USECS_PER_DAY;
  if (us < 0)
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, std::string(name) + " must not be negative for " + Describe(key), {},
                "Pass '0' to answer at once, or how long to wait for a concurrent holder.");
  return us > static_cast<long double>(PG_INT64_MAX / 2) ? PG_INT64_MAX / 2 : static_cast<int64>(us);
}

TimestampTz AddInterval(TimestampTz base, const Interval& interval, const char* name, const KeyRef& key) {
  try {
    return PgCall([&] {
      return DatumGetTimestampTz(
          DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(base), IntervalPGetDatum(&interval)));
    });
  } catch (const PgError& e) {
    if (e.sqlstate() != ERRCODE_DATETIME_VALUE_OUT_OF_RANGE) throw;
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, std::string(name) + " is too large for " + Describe(key),
                std::string("now() + ") + name + " is beyond the range of timestamptz.", "Pass a smaller interval.");
  }
}

}  // namespace pgi::args
