#include "keys/direct_write.hpp"

#include "keys/direct_read.hpp"
#include "keys/keys_table.hpp"
#include "pg/boundary.hpp"
#include "pg/pg_compat.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "access/tableam.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/snapmgr.h"
}

namespace pgi::direct_write {
namespace {

using keys_table::Opened;

// The executor state a one-row write needs: a range table holding the table
// (constraint error messages look columns up in it), its result relation
// with every index open, as ModifyTable sets them up. Call inside PgCall.
struct Target {
  EState* estate;
  ResultRelInfo* relation;
};

Target Begin(const Opened& opened) {
  EState* estate = CreateExecutorState();
  RangeTblEntry* entry = makeNode(RangeTblEntry);
  entry->rtekind = RTE_RELATION;
  entry->relid = RelationGetRelid(opened.rel);
  entry->relkind = opened.rel->rd_rel->relkind;
  entry->rellockmode = RowExclusiveLock;
  compat::InitOneRelationRangeTable(estate, entry);
  ResultRelInfo* relation = makeNode(ResultRelInfo);
  InitResultRelInfo(relation, opened.rel, 1, nullptr, 0);
  ExecOpenIndices(relation, false);
  estate->es_output_cid = GetCurrentCommandId(true);
  return {estate, relation};
}

void End(const Target& target) {
  ExecCloseIndices(target.relation);
  ExecResetTupleTable(target.estate->es_tupleTable, false);
  FreeExecutorState(target.estate);
}

void Set(TupleTableSlot* slot, keys_table::Column column, Datum value, bool isnull = false) {
  const int at = keys_table::Attnum(column) - 1;
  slot->tts_values[at] = isnull ? Datum(0) : value;
  slot->tts_isnull[at] = isnull;
}

void SetNull(TupleTableSlot* slot, keys_table::Column column) { Set(slot, column, 0, true); }

Datum Get(TupleTableSlot* slot, keys_table::Column column, bool* isnull) {
  return slot_getattr(slot, keys_table::Attnum(column), isnull);
}

}  // namespace

bool InsertAbsent(const args::KeyRef& key, const store::NewClaim& claim, bool completed) {
  return PgCall([&] {
    Opened opened;
    if (!keys_table::Open(keys_table::Access::Insert, &opened)) return false;
    const Target target = Begin(opened);
    TupleTableSlot* row = ExecInitExtraTupleSlot(target.estate, RelationGetDescr(opened.rel), &TTSOpsVirtual);
    ExecClearTuple(row);
    for (int i = 0; i < row->tts_tupleDescriptor->natts; i++) row->tts_isnull[i] = true;
    Set(row, keys_table::kScope, PointerGetDatum(key.scope));
    Set(row, keys_table::kKey, PointerGetDatum(key.key));
    Set(row, keys_table::kFingerprint, PointerGetDatum(claim.fingerprint), claim.fingerprint == nullptr);
    Set(row, keys_table::kState, ObjectIdGetDatum(keys_table::StateLabel(completed)));
    Set(row, keys_table::kToken, Int64GetDatum(claim.token));
    Set(row, keys_table::kAttempt, Int32GetDatum(1));
    // in progress under a lease, or (once()) completed at once without one
    Set(row, keys_table::kLockedUntil, TimestampTzGetDatum(claim.locked_until), completed);
    Set(row, keys_table::kCompletedAt, TimestampTzGetDatum(claim.now), !completed);
    Set(row, keys_table::kCreatedAt, TimestampTzGetDatum(claim.now));
    Set(row, keys_table::kExpiresAt, TimestampTzGetDatum(claim.expires_at));
    // 1.2: the claiming request's traceparent (NULL for once(), and where
    // the database is not at 1.2 yet and has no such column)
    if (keys_table::Has(keys_table::kTraceContext))
      Set(row, keys_table::kTraceContext, PointerGetDatum(claim.trace_context), claim.trace_context == nullptr);
    ExecStoreVirtualTuple(row);
    // NOT NULL and CHECK constraints, heap_insert, every index (the primary
    // key's unique check included), as logical replication's apply does.
    ExecSimpleRelationInsert(target.relation, target.estate, row);
    End(target);
    keys_table::Close(opened);
    CommandCounterIncrement();
    return true;
  });
}

Completion Complete(const args::KeyRef& key, int64 token, TimestampTz now, const store::Response& response) {
  return PgCall([&] {
    Opened opened;
    if (!keys_table::Open(keys_table::Access::Update, &opened)) return Completion::Unknown;
    // What a READ COMMITTED UPDATE reads: the latest committed rows (SPI
    // takes such a snapshot for each statement).
    const Snapshot snapshot = GetLatestSnapshot();
    TupleTableSlot* old = direct_read::Find(opened, key, snapshot);
    bool isnull = false;
    const bool held = old != nullptr && DatumGetInt64(Get(old, keys_table::kToken, &isnull)) == token &&
                      DatumGetObjectId(Get(old, keys_table::kState, &isnull)) == keys_table::StateLabel(false) &&
                      DatumGetTimestampTz(Get(old, keys_table::kExpiresAt, &isnull)) > now;
    if (!held) {
      if (old != nullptr) ExecDropSingleTupleTableSlot(old);
      keys_table::Close(opened);
      return Completion::NotHeld;
    }
    const Target target = Begin(opened);
    TupleTableSlot* row = table_slot_create(opened.rel, &target.estate->es_tupleTable);
    slot_getallattrs(old);
    ExecClearTuple(row);
    for (int i = 0; i < row->tts_tupleDescriptor->natts; i++) {
      row->tts_values[i] = old->tts_values[i];
      row->tts_isnull[i] = old->tts_isnull[i];
    }
    Set(row, keys_table::kState, ObjectIdGetDatum(keys_table::StateLabel(true)));
    Set(row, keys_table::kCompletedAt, TimestampTzGetDatum(now));
    SetNull(row, keys_table::kLockedUntil);
    Set(row, keys_table::kResponseStatus, Int32GetDatum(response.status));
    Set(row, keys_table::kResponseBody, PointerGetDatum(response.body), response.body == nullptr);
    Set(row, keys_table::kResponseHeaders, PointerGetDatum(response.headers), response.headers == nullptr);
    ExecStoreVirtualTuple(row);
    ExecMaterializeSlot(row);  // its own copy of the values still in old's buffer
    ItemPointerData tid = old->tts_tid;
    ExecDropSingleTupleTableSlot(old);

    CheckCmdReplicaIdentity(opened.rel, CMD_UPDATE);
    if (RelationGetDescr(opened.rel)->constr != nullptr) ExecConstraints(target.relation, row, target.estate);
    TM_FailureData failure;
    LockTupleMode lock_mode;
    compat::IndexesToUpdate update_indexes = compat::kNoIndexesToUpdate;
    // Waits for a row lock as the statement would (a sweep holding the row).
    const TM_Result result = table_tuple_update(opened.rel, &tid, row, target.estate->es_output_cid, snapshot,
                                                InvalidSnapshot, true, &failure, &lock_mode, &update_indexes);
    // Not HOT (an index on a column finish() changes, or no room on the
    // page): the new version needs its index entries.
    if (result == TM_Ok)
      list_free(compat::InsertIndexEntriesAfterUpdate(target.relation, row, target.estate, update_indexes));
    End(target);
    keys_table::Close(opened);
    if (result != TM_Ok) return Completion::Unknown;  // updated or deleted since: the statement re-checks it
    CommandCounterIncrement();
    return Completion::Stored;
  });
}

}  // namespace pgi::direct_write
