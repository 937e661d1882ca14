#include "claim_result.hpp"

#include "boundary.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "catalog/pg_enum.h"
#include "utils/syscache.h"
}

namespace pgi::claim_result {
namespace {

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

// The result's blessed descriptor and the outcome labels' OIDs, kept in the
// call site's fn_extra: they live as long as the FmgrInfo (one query or plan),
// and a re-created extension (new type and enum OIDs) comes with a new plan.
struct CallSite {
  TupleDesc tupdesc;
  Oid outcome[4];
};

Datum Build(FunctionCallInfo fcinfo, const Fields& f, MemoryContext into) {
  return PgCall([&] {
    auto* site = static_cast<CallSite*>(fcinfo->flinfo->fn_extra);
    if (site == nullptr) {
      MemoryContext previous = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
      site = static_cast<CallSite*>(palloc0(sizeof(CallSite)));
      TupleDesc tupdesc;
      if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE || tupdesc->natts != 9)
        elog(ERROR, "pg_idempotency: claim must return idempotency.claim_result");
      site->tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
      // The enum's oids change when the extension is re-created: look the
      // labels up by the result type's first column.
      const Oid outcome_type = TupleDescAttr(site->tupdesc, 0)->atttypid;
      for (Outcome o : {Outcome::Claimed, Outcome::Replay, Outcome::InProgress, Outcome::Mismatch}) {
        const Oid oid = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid, ObjectIdGetDatum(outcome_type),
                                        CStringGetDatum(Label(o)));
        if (!OidIsValid(oid)) elog(ERROR, "pg_idempotency: outcome label \"%s\" is missing", Label(o));
        site->outcome[static_cast<int>(o)] = oid;
      }
      fcinfo->flinfo->fn_extra = site;
      MemoryContextSwitchTo(previous);
    }
    MemoryContext previous = MemoryContextSwitchTo(into);
    TupleDesc tupdesc = site->tupdesc;
    const Oid outcome_oid = site->outcome[static_cast<int>(f.outcome)];

    Datum values[9];
    bool nulls[9];
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
    Datum result = HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
    MemoryContextSwitchTo(previous);
    return result;
  });
}

}  // namespace pgi::claim_result
