// claim's planner support function: drops trailing arguments that only
// restate what an absent argument means, so that the common call
// claim(scope, key, fingerprint) is planned with three arguments instead of
// the seven the planner fills in from the declared defaults.
//
// Why: in FROM (SELECT * FROM idempotency.claim(...)), the function scan
// builds one expression state per argument at every execution, and a replay
// is cheap enough that four constant NULL/'0' arguments showed (about 3k of
// 80k instructions per replay, bench/README.md). claim() reads an argument
// it was not given as its default (pg/args.hpp), so the call means the same.
//
// An argument is dropped only when it is a constant NULL, or for `wait` a
// constant zero interval (its default '0'), and only from the end. The call
// never ends with six arguments: that is how a database still at 1.0 or 1.1
// calls (no trace_context), and claim() tells the two apart by the count.
#include "pg/boundary.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "nodes/nodeFuncs.h"
#include "nodes/pg_list.h"
#include "nodes/primnodes.h"
#include "nodes/supportnodes.h"
}

namespace pgi {
namespace {

constexpr int kClaimArgs = 7;      // 1.2: scope, key, fingerprint, ttl, lease, wait, trace_context
constexpr int kArgsBefore12 = 6;   // 1.0, 1.1: no trace_context
constexpr int kWait = 5;
constexpr int kKeep = 2;           // scope and key are always passed

bool MeansAbsent(const Node* arg, int position) {
  if (arg == nullptr || !IsA(arg, Const)) return false;
  const Const* value = reinterpret_cast<const Const*>(arg);
  if (value->constisnull) return true;
  if (position != kWait || value->consttype != INTERVALOID) return false;
  const Interval* wait = DatumGetIntervalP(value->constvalue);
  return wait->time == 0 && wait->day == 0 && wait->month == 0;
}

Datum ClaimSupport(FunctionCallInfo fcinfo) {
  return PgCall([&]() -> Datum {
    Node* request = reinterpret_cast<Node*>(PG_GETARG_POINTER(0));
    if (!IsA(request, SupportRequestSimplify)) return PointerGetDatum(nullptr);
    const FuncExpr* call = reinterpret_cast<SupportRequestSimplify*>(request)->fcall;
    const int given = list_length(call->args);
    if (given != kClaimArgs) return PointerGetDatum(nullptr);
    int keep = given;
    while (keep > kKeep && MeansAbsent(static_cast<const Node*>(list_nth(call->args, keep - 1)), keep - 1)) keep--;
    if (keep == given || keep == kArgsBefore12) return PointerGetDatum(nullptr);
    FuncExpr* shorter = static_cast<FuncExpr*>(copyObjectImpl(call));
    shorter->args = list_truncate(list_copy(call->args), keep);
    return PointerGetDatum(shorter);
  });
}

}  // namespace
}  // namespace pgi

PGI_SQL_FUNCTION(idempotency_claim_support) {
  return pgi::Guard([&] { return pgi::ClaimSupport(fcinfo); });
}
