// Building idempotency.claim_result rows.
#pragma once

#include "pg/pg_headers.hpp"

namespace pgi::claim_result {

enum class Outcome { Claimed, Replay, InProgress, Mismatch };

// One claim_result; pointer fields nullptr and has_* false mean NULL.
struct Fields {
  Outcome outcome;
  bool has_token;
  int64 token;
  bool has_attempt;
  int32 attempt;
  text* recovery_point;
  bool has_response_status;
  int32 response_status;
  Datum response_headers;  // 0 = NULL
  Datum response_body;     // 0 = NULL
  bool has_expires_at;
  TimestampTz expires_at;
  bool has_locked_until;
  TimestampTz locked_until;
  text* trace_context;  // 1.2; nullptr = NULL
};

// Forms the composite in `into` (the caller's memory, outliving SPI). The
// result type has 9 attributes in a database at 1.0 or 1.1 (served by this
// library during a rolling upgrade) and 10 from 1.2 (trace_context).
Datum Build(FunctionCallInfo fcinfo, const Fields& fields, MemoryContext into);

}  // namespace pgi::claim_result
