#include "request/claim_result.hpp"

#include "pg/boundary.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "catalog/pg_enum.h"
#include "nodes/execnodes.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
}

namespace pgi::claim_result {
namespace {

constexpr int kAttributes = 10;          // 1.2
constexpr int kAttributesBefore12 = 9;   // 1.0, 1.1: no trace_context
constexpr int kOutcomes = 4;

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

// The outcome enum's label OIDs, per backend: a replay is cheap enough that
// a catalog-cache lookup per call shows. The OIDs change when the extension
// is re-created, which changes pg_enum: every pg_enum invalidation forgets
// them (a generation count makes a fill raced by one count once, unkept).
struct Labels {
  Oid type;
  Oid oid[kOutcomes];
};
Labels labels = {};
uint64 label_invalidations = 0;
bool label_callback_registered = false;

void ForgetLabels(Datum, int, uint32) {
  labels.type = InvalidOid;
  label_invalidations++;
}

// Call inside PgCall.
Oid LabelOid(Oid type, Outcome outcome) {
  if (!label_callback_registered) {
    CacheRegisterSyscacheCallback(ENUMTYPOIDNAME, ForgetLabels, 0);
    label_callback_registered = true;
  }
  const int index = static_cast<int>(outcome);
  if (labels.type == type) return labels.oid[index];
  const uint64 seen = label_invalidations;
  Labels fresh = {type, {}};
  for (int i = 0; i < kOutcomes; i++) {
    const char* name = Label(static_cast<Outcome>(i));
    fresh.oid[i] = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid, ObjectIdGetDatum(type), CStringGetDatum(name));
    if (!OidIsValid(fresh.oid[i])) elog(ERROR, "pg_idempotency: outcome label \"%s\" is missing", name);
  }
  if (label_invalidations == seen) labels = fresh;
  return fresh.oid[index];
}

// The row type to form, without a catalog lookup where the caller knows it.
// In FROM (SELECT * FROM claim(...)) the function scan passes the row type it
// expects; in a select list (SELECT claim(...)) the call's result type comes
// from the type cache (typcache.c keeps it current). Either way it is the
// type the statement was planned with, as get_call_result_type would give.
// *pinned: the descriptor came from lookup_rowtype_tupdesc; release it.
TupleDesc ResultType(FunctionCallInfo fcinfo, bool* pinned) {
  *pinned = false;
  const auto* rsinfo = reinterpret_cast<const ReturnSetInfo*>(fcinfo->resultinfo);
  if (rsinfo != nullptr && IsA(rsinfo, ReturnSetInfo) && rsinfo->expectedDesc != nullptr &&
      OidIsValid(rsinfo->expectedDesc->tdtypeid) && rsinfo->expectedDesc->tdtypeid != RECORDOID)
    return rsinfo->expectedDesc;
  const Oid type = fcinfo->flinfo != nullptr ? get_fn_expr_rettype(fcinfo->flinfo) : InvalidOid;
  if (OidIsValid(type) && type != RECORDOID && type_is_rowtype(type)) {
    *pinned = true;
    return lookup_rowtype_tupdesc(type, -1);
  }
  TupleDesc tupdesc;
  if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "pg_idempotency: claim must return idempotency.claim_result");
  return BlessTupleDesc(tupdesc);
}

}  // namespace

Datum Build(FunctionCallInfo fcinfo, const Fields& f, MemoryContext into) {
  return PgCall([&] {
    MemoryContext previous = MemoryContextSwitchTo(into);
    bool pinned = false;
    const TupleDesc tupdesc = ResultType(fcinfo, &pinned);
    if (tupdesc->natts != kAttributes && tupdesc->natts != kAttributesBefore12)
      elog(ERROR, "pg_idempotency: claim must return idempotency.claim_result");
    // The enum's oids change when the extension is re-created: look the label
    // up by the result type's first column.
    const Oid outcome_oid = LabelOid(TupleDescAttr(tupdesc, 0)->atttypid, f.outcome);

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
    if (pinned) ReleaseTupleDesc(tupdesc);
    MemoryContextSwitchTo(previous);
    return result;
  });
}

}  // namespace pgi::claim_result
