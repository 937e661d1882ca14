#include "keys/direct_read.hpp"

#include "keys/keys_table.hpp"
#include "pg/boundary.hpp"
#include "pg/pg_compat.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"
}

namespace pgi::direct_read {
namespace {

using keys_table::Opened;
using namespace keys_table;  // the column names

bool Open(Opened* opened) { return keys_table::Open(Access::Read, opened); }

}  // namespace

TupleTableSlot* Find(const Opened& opened, const args::KeyRef& key, Snapshot snapshot) {
  ScanKeyData keys[2];
  // The index's own collations, as the planner would use for k.scope = $1.
  ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, opened.primary_key->rd_indcollation[0], F_TEXTEQ,
                         PointerGetDatum(key.scope));
  ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid, opened.primary_key->rd_indcollation[1], F_TEXTEQ,
                         PointerGetDatum(key.key));
  TupleTableSlot* slot = table_slot_create(opened.rel, nullptr);
  const IndexScanDesc scan = compat::BeginIndexScan(opened.rel, opened.primary_key, snapshot, 2);
  index_rescan(scan, keys, 2, nullptr, 0);
  const bool found = index_getnext_slot(scan, ForwardScanDirection, slot);
  index_endscan(scan);
  if (found) return slot;
  ExecDropSingleTupleTableSlot(slot);
  return nullptr;
}

namespace {

void Close(const Opened& opened, TupleTableSlot* slot) {
  if (slot != nullptr) ExecDropSingleTupleTableSlot(slot);
  keys_table::Close(opened);
}

Datum Column(TupleTableSlot* slot, int column, bool* isnull) { return slot_getattr(slot, Attnum(static_cast<keys_table::Column>(column)), isnull); }

// A by-reference value copied out of the buffer (a TOAST pointer stays one,
// as in the tuple SPI would have copied).
Datum CopyOf(TupleTableSlot* slot, int column, bool* isnull) {
  const Datum value = Column(slot, column, isnull);
  return *isnull ? Datum(0) : datumCopy(value, false, -1);
}

}  // namespace

bool Read(const args::KeyRef& key, store::KeyRow* row) {
  return PgCall([&] {
    Opened opened;
    if (!ActiveSnapshotSet() || !Open(&opened)) return false;
    TupleTableSlot* slot = Find(opened, key, GetActiveSnapshot());
    store::KeyRow result{};
    if (slot != nullptr) {
      bool isnull = false;
      result.found = true;
      Datum d = CopyOf(slot, kFingerprint, &isnull);
      result.fingerprint = isnull ? nullptr : DatumGetByteaPP(d);
      result.completed = DatumGetObjectId(Column(slot, kState, &isnull)) == StateLabel(true);
      result.token = DatumGetInt64(Column(slot, kToken, &isnull));
      result.attempt = DatumGetInt32(Column(slot, kAttempt, &isnull));
      d = CopyOf(slot, kRecoveryPoint, &isnull);
      result.recovery_point = isnull ? nullptr : DatumGetTextPP(d);
      result.expires_at = DatumGetTimestampTz(Column(slot, kExpiresAt, &isnull));
      d = Column(slot, kLockedUntil, &isnull);
      result.has_locked_until = !isnull;
      result.locked_until = isnull ? 0 : DatumGetTimestampTz(d);
      d = Column(slot, kResponseStatus, &isnull);
      result.has_response_status = !isnull;
      result.response_status = isnull ? 0 : DatumGetInt32(d);
      result.response_headers = CopyOf(slot, kResponseHeaders, &isnull);
      result.response_body = CopyOf(slot, kResponseBody, &isnull);
      if (keys_table::Has(keys_table::kTraceContext)) {  // a database at 1.2
        d = CopyOf(slot, kTraceContext, &isnull);
        result.trace_context = isnull ? nullptr : DatumGetTextPP(d);
      }
    }
    Close(opened, slot);
    *row = result;
    return true;
  });
}

Presence Probe(const args::KeyRef& key) {
  return PgCall([&] {
    Opened opened;
    if (!Open(&opened)) return Presence::Unknown;
    SnapshotData dirty;
    InitDirtySnapshot(dirty);
    TupleTableSlot* slot = Find(opened, key, &dirty);
    const Presence presence = slot != nullptr ? Presence::Present : Presence::Absent;
    Close(opened, slot);
    return presence;
  });
}

bool LookupLive(const args::KeyRef& key, TimestampTz now, MemoryContext into, Datum* row) {
  return PgCall([&] {
    Opened opened;
    if (!ActiveSnapshotSet() || !Open(&opened)) return false;
    TupleTableSlot* slot = Find(opened, key, GetActiveSnapshot());
    Datum result = 0;
    bool isnull = false;
    if (slot != nullptr && DatumGetTimestampTz(Column(slot, kExpiresAt, &isnull)) > now) {
      bool should_free = false;
      const HeapTuple tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
      const MemoryContext previous = MemoryContextSwitchTo(into);
      result = heap_copy_tuple_as_datum(tuple, RelationGetDescr(opened.rel));  // flattens any TOAST pointers
      MemoryContextSwitchTo(previous);
      if (should_free) heap_freetuple(tuple);
    }
    Close(opened, slot);
    *row = result;
    return true;
  });
}

}  // namespace pgi::direct_read
