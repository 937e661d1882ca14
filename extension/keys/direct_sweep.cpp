#include "keys/direct_sweep.hpp"

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
#include "catalog/index.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_index.h"
#include "commands/defrem.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

namespace pgi::direct_sweep {
namespace {

using keys_table::Opened;
using namespace keys_table;  // the column names

// Whether index is a valid, plain, ascending btree on expires_at alone in the
// default timestamptz operator family (the install script's
// keys_expires_at_idx, whatever it is called now): one the scan keys below
// can walk in expiry order. INCLUDE columns do not matter.
bool WalksExpiry(Relation index) {
  const Form_pg_index form = index->rd_index;
  if (index->rd_rel->relam != BTREE_AM_OID || !form->indisvalid || IndexRelationGetNumberOfKeyAttributes(index) != 1 ||
      form->indkey.values[0] != Attnum(kExpiresAt) || index->rd_opcintype[0] != TIMESTAMPTZOID ||
      index->rd_indoption[0] != 0 || !heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, nullptr))
    return false;
  const Oid default_class = GetDefaultOpClass(TIMESTAMPTZOID, BTREE_AM_OID);
  return OidIsValid(default_class) && index->rd_opfamily[0] == get_opclass_family(default_class);
}

// The table's expiry index, opened as the executor opens a scanned result
// relation's index; nullptr when it has none.
Relation OpenExpiryIndex(Relation rel) {
  List* indexes = RelationGetIndexList(rel);
  Relation found = nullptr;
  for (int i = 0; i < list_length(indexes) && found == nullptr; i++) {
    const Relation index = index_open(list_nth_oid(indexes, i), RowExclusiveLock);
    if (WalksExpiry(index))
      found = index;
    else
      index_close(index, NoLock);
  }
  list_free(indexes);
  return found;
}

// The rest of the sweep's condition (sweep_sql.cpp's Sweepable), with SQL's
// three-valued logic: state <> 'in_progress' OR locked_until IS NULL OR
// locked_until <= now. The scan keys took care of expires_at.
bool LeaseOver(TupleTableSlot* slot, TimestampTz now) {
  bool state_null = false;
  bool locked_null = false;
  const Oid state = DatumGetObjectId(slot_getattr(slot, Attnum(kState), &state_null));
  const Datum locked_until = slot_getattr(slot, Attnum(kLockedUntil), &locked_null);
  return (!state_null && state != StateLabel(false)) || locked_null || DatumGetTimestampTz(locked_until) <= now;
}

}  // namespace

std::optional<uint64> DeleteExpired(TimestampTz now, int64 limit, TimestampTz* from) {
  return PgCall([&]() -> std::optional<uint64> {
    Opened opened;
    if (!keys_table::Open(Access::Delete, &opened)) return std::nullopt;
    const Relation index = OpenExpiryIndex(opened.rel);
    if (index == nullptr) {
      keys_table::Close(opened);
      return std::nullopt;
    }
    // A published table without a replica identity refuses deletes: the
    // statement's error, raised here as the executor raises it.
    CheckCmdReplicaIdentity(opened.rel, CMD_DELETE);

    // What a READ COMMITTED DELETE reads: the latest committed rows.
    const Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
    ScanKeyData keys[2];
    int nkeys = 0;
    ScanKeyEntryInitialize(&keys[nkeys++], 0, 1, BTLessEqualStrategyNumber, InvalidOid, InvalidOid, F_TIMESTAMPTZ_LE,
                           TimestampTzGetDatum(now));
    if (*from != DT_NOBEGIN)
      ScanKeyEntryInitialize(&keys[nkeys++], 0, 1, BTGreaterEqualStrategyNumber, InvalidOid, InvalidOid,
                             F_TIMESTAMPTZ_GE, TimestampTzGetDatum(*from));
    TupleTableSlot* slot = table_slot_create(opened.rel, nullptr);
    const IndexScanDesc scan = compat::BeginIndexScan(opened.rel, index, snapshot, nkeys);
    index_rescan(scan, keys, nkeys, nullptr, 0);
    const CommandId command = GetCurrentCommandId(true);
    uint64 deleted = 0;
    TimestampTz latest = *from;
    while (deleted < static_cast<uint64>(limit) && index_getnext_slot(scan, ForwardScanDirection, slot)) {
      CHECK_FOR_INTERRUPTS();
      if (!LeaseOver(slot, now)) continue;
      bool isnull = false;
      const TimestampTz expires_at = DatumGetTimestampTz(slot_getattr(slot, Attnum(kExpiresAt), &isnull));
      ItemPointerData tid = slot->tts_tid;
      TM_FailureData failure;
      // wait = false: a row being written or locked by another transaction
      // (a claim taking it over) answers TM_BeingModified, and one changed
      // since the snapshot TM_Updated or TM_Deleted; all are skipped.
      if (table_tuple_delete(opened.rel, &tid, command, snapshot, InvalidSnapshot, false, &failure, false) != TM_Ok)
        continue;
      deleted++;
      latest = Max(latest, expires_at);
    }
    index_endscan(scan);
    ExecDropSingleTupleTableSlot(slot);
    UnregisterSnapshot(snapshot);
    index_close(index, NoLock);
    keys_table::Close(opened);
    if (deleted > 0) CommandCounterIncrement();  // as SPI does after a write
    *from = latest;
    return deleted;
  });
}

}  // namespace pgi::direct_sweep
