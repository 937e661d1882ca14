#include "request/claim_result.hpp"

#include "pg/boundary.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "catalog/pg_enum.h"
#include "utils/syscache.h"
}

namespace pgi::claim_result {
namespace {

constexpr int kAttributes = 10;          // 1.2
constexpr int kAttributesBefore12 = 9;   // 1.0, 1.1: no trace_context

const char* Label(Outcome outcome) {
  switch (outcome) {
    case Outcome::Claimed:
      return "claimed";
    case Outcome::Replay:
      return "replay";
    case Outcome::InProgress:
      return "in_progress";
    case Outcome::Mismatch:
      return "mismatch";
  }
  return "in_progress";
}

}  // namespace

Datum Build(FunctionCallInfo fcinfo, const Fields& f, MemoryContext into) {
  const char* label = Label(f.outcome);
  return PgCall([&] {
    MemoryContext previous = MemoryContextSwitchTo(into);
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE ||
        (tupdesc->natts != kAttributes && tupdesc->natts != kAttributesBefore12))
      elog(ERROR, "pg_idempotency: claim must return idempotency.claim_result");
    tupdesc = BlessTupleDesc(tupdesc);
    // The enum's oids change when the extension is re-created: look the label
    // up by the result type's first column (a syscache hit).
    const Oid outcome_type = TupleDescAttr(tupdesc, 0)->atttypid;
    const Oid outcome_oid =
        GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid, ObjectIdGetDatum(outcome_type), CStringGetDatum(label));
    if (!OidIsValid(outcome_oid)) elog(ERROR, "pg_idempotency: outcome label \"%s\" is missing", label);

    Datum values[kAttributes];
    bool nulls[kAttributes];
    values[0] = ObjectIdGetDatum(outcome_oid);
    nulls[0] = false;
    values[1] = Int64GetDatum(f.token);
    nulls[1] = !f.has_token;
    values[2] = Int32GetDatum(f.attempt);
    nulls[2] = !f.has_attempt;
    values[3] = PointerGetDatum(f.recovery_point);
    nulls[3] = f.recovery_point == nullptr;
    values[4] = Int32GetDatum(f.response_status);
    nulls[4] = !f.has_response_status;
    values[5] = f.response_headers;
    nulls[5] = f.response_headers == 0;
    values[6] = f.response_body;
    nulls[6] = f.response_body == 0;
    values[7] = TimestampTzGetDatum(f.expires_at);
    nulls[7] = !f.has_expires_at;
    values[8] = TimestampTzGetDatum(f.locked_until);
    nulls[8] = !f.has_locked_until;
    values[9] = PointerGetDatum(f.trace_context);  // not formed when the type has 9 attributes
    nulls[9] = f.trace_context == nullptr;
    Datum result = HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
    MemoryContextSwitchTo(previous);
    return result;
  });
}

}  // namespace pgi::claim_result
