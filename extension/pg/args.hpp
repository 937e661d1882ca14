// Reading and validating SQL arguments: NULLs, lengths and intervals become
// the contract's SQLSTATEs before anything is touched.
#pragma once

#include <string>

#include "pg/pg_headers.hpp"

namespace pgi::args {

constexpr int kMaxKeyBytes = 255;
constexpr int kMaxFingerprintBytes = 64;

// (scope, key) of a call, detoasted. Trivially copyable: it crosses PgCall.
struct KeyRef {
  text* scope;
  text* key;
};

// Arguments 0 and 1: NULL -> 22004, empty or longer than 255 bytes -> 22023.
KeyRef Key(FunctionCallInfo fcinfo);

// A bytea argument that may be NULL; longer than 64 bytes -> 22023.
bytea* OptionalFingerprint(FunctionCallInfo fcinfo, int argno, const KeyRef& key);

// 1.2: an optional W3C traceparent, "00-<32 hex>-<16 hex>-<2 hex>" in lower
// case (version ff and all-zero ids are invalid). Absent (a database at 1.0
// or 1.1 passes fewer arguments) or NULL -> nullptr; any other form -> 22023.
constexpr int kTraceparentBytes = 55;
text* OptionalTraceContext(FunctionCallInfo fcinfo, int argno, const KeyRef& key);

// A required argument: NULL -> 22004.
void RequireNotNull(FunctionCallInfo fcinfo, int argno, const char* name, const KeyRef* key);

// An optional positive interval; NULL -> fallback_us microseconds. Not positive -> 22023.
Interval PositiveInterval(FunctionCallInfo fcinfo, int argno, const char* name, int64 fallback_us, const KeyRef* key);

// An optional non-negative interval as microseconds; NULL -> 0. Negative -> 22023.
int64 NonNegativeIntervalUs(FunctionCallInfo fcinfo, int argno, const char* name, const KeyRef& key);

// base + interval, as timestamptz arithmetic does it; out of range -> 22023 naming what.
TimestampTz AddInterval(TimestampTz base, const Interval& interval, const char* name, const KeyRef& key);

// "scope"/"key" for messages.
std::string Describe(const KeyRef& key);

}  // namespace pgi::args
