#include "direct_read.hpp"

#include <cstring>

#include "boundary.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_opfamily_d.h"
#include "commands/extension.h"
#include "executor/tuptable.h"
#include "utils/acl.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
}

namespace pgi::direct_read {
namespace {

enum Column : int {
  kScope,
  kKey,
  kFingerprint,
  kState,
  kToken,
  kAttempt,
  kRecoveryPoint,
  kLockedUntil,
  kExpiresAt,
  kResponseStatus,
  kResponseHeaders,
  kResponseBody,
  kColumns
};

struct ColumnSpec {
  const char* name;
  Oid type;  // InvalidOid: the state enum
};

// The columns read, by name and type: a column dropped, re-added or retyped
// (ALTER TABLE) moves or disappears, and then the SPI statement decides.
const ColumnSpec kSpecs[kColumns] = {
    {"scope", TEXTOID},           {"key", TEXTOID},           {"fingerprint", BYTEAOID},
    {"state", InvalidOid},        {"token", INT8OID},         {"attempt", INT4OID},
    {"recovery_point", TEXTOID},  {"locked_until", TIMESTAMPTZOID}, {"expires_at", TIMESTAMPTZOID},
    {"response_status", INT4OID}, {"response_headers", JSONBOID},   {"response_body", BYTEAOID},
};

// What is known of idempotency.keys in this backend. Filled while the table
// is locked; `valid` is cleared by any relcache invalidation of the table (or
// of every relation), which is how DROP/CREATE EXTENSION, ALTER TABLE,
// REINDEX, VACUUM FULL, GRANT/REVOKE and CREATE TABLE ... INHERITS reach us.
struct Cache {
  bool valid;
  bool usable;  // false: the table is not of the expected shape, or Citus is installed
  Oid relid;
  AttrNumber column[kColumns];
  Oid completed;  // pg_enum OID of 'completed'::idempotency.state
};

Cache cache = {};
uint64 invalidations = 0;  // bumped by the callback, so a fill raced by one is not trusted
bool callback_registered = false;
int citus_preloaded = -1;  // unknown until first asked

void OnRelcacheInvalidation(Datum, Oid relid) {
  if (relid == InvalidOid || relid == cache.relid) {
    cache.valid = false;
    invalidations++;
  }
}

// Citus must be in shared_preload_libraries to work at all, and the setting
// cannot change without a restart: read it once per backend.
bool CitusPreloaded() {
  if (citus_preloaded < 0) {
    const char* libraries = GetConfigOption("shared_preload_libraries", true, false);
    citus_preloaded = libraries != nullptr && strstr(libraries, "citus") != nullptr ? 1 : 0;
  }
  return citus_preloaded == 1;
}

Oid KeysRelid() {
  const Oid schema = get_namespace_oid("idempotency", true);
  return OidIsValid(schema) ? get_relname_relid("keys", schema) : InvalidOid;
}

// Fills the cache from the locked relation.
void Fill(Relation rel) {
  const uint64 seen = invalidations;
  cache = {};
  cache.relid = RelationGetRelid(rel);
  if (!OidIsValid(get_extension_oid("citus", true))) {
    const TupleDesc desc = RelationGetDescr(rel);
    bool complete = true;
    for (int c = 0; c < kColumns && complete; c++) {
      complete = false;
      for (int i = 0; i < desc->natts; i++) {
        const Form_pg_attribute attribute = TupleDescAttr(desc, i);
        if (attribute->attisdropped || strcmp(NameStr(attribute->attname), kSpecs[c].name) != 0) continue;
        complete = kSpecs[c].type != InvalidOid ? attribute->atttypid == kSpecs[c].type
                                                : get_typtype(attribute->atttypid) == TYPTYPE_ENUM;
        cache.column[c] = attribute->attnum;
        break;
      }
    }
    if (complete) {
      const Oid state_type = TupleDescAttr(desc, cache.column[kState] - 1)->atttypid;
      const HeapTuple label =
          SearchSysCache2(ENUMTYPOIDNAME, ObjectIdGetDatum(state_type), CStringGetDatum("completed"));
      if (HeapTupleIsValid(label)) {
        cache.completed = reinterpret_cast<Form_pg_enum>(GETSTRUCT(label))->oid;
        ReleaseSysCache(label);
        cache.usable = true;
      }
    }
  }
  // An invalidation taken in while filling (catalog reads accept them) may
  // describe a change this fill missed: use the result once, keep it not.
  cache.valid = invalidations == seen;
}

struct Opened {
  Relation rel;
  Relation index;
};

// Opens idempotency.keys and its primary key when a direct read is safe for
// this caller now. Call inside PgCall. On false nothing is left open (the
// AccessShareLock taken, if any, is kept to the end of the transaction, as
// the SPI statement that follows takes it anyway).
bool Open(Opened* opened) {
  if (CitusPreloaded()) return false;
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, 0);
    callback_registered = true;
  }
  const Oid relid = cache.valid ? cache.relid : KeysRelid();
  if (!OidIsValid(relid)) return false;
  // Locking accepts pending invalidations: a drop, rename or ALTER committed
  // meanwhile is seen here, and then the name must still lead to this table.
  const Relation rel = try_table_open(relid, AccessShareLock);
  if (rel == nullptr) return false;
  if (!cache.valid || cache.relid != relid) {
    if (KeysRelid() != relid) {
      table_close(rel, NoLock);
      return false;
    }
    Fill(rel);
  }
  const Form_pg_class form = rel->rd_rel;
  const bool safe = cache.usable && form->relkind == RELKIND_RELATION && form->relam == HEAP_TABLE_AM_OID &&
                    !form->relhassubclass && pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK &&
                    (!form->relrowsecurity || check_enable_rls(relid, InvalidOid, true) != RLS_ENABLED);
  const Oid primary_key = safe ? RelationGetPrimaryKeyIndex(rel) : InvalidOid;
  if (!OidIsValid(primary_key)) {
    table_close(rel, NoLock);
    return false;
  }
  const Relation index = index_open(primary_key, AccessShareLock);
  const int2vector& keys = index->rd_index->indkey;
  const bool shaped = index->rd_rel->relam == BTREE_AM_OID && IndexRelationGetNumberOfKeyAttributes(index) == 2 &&
                      keys.values[0] == cache.column[kScope] && keys.values[1] == cache.column[kKey] &&
                      index->rd_opfamily[0] == TEXT_BTREE_FAM_OID && index->rd_opfamily[1] == TEXT_BTREE_FAM_OID &&
                      index->rd_opcintype[0] == TEXTOID && index->rd_opcintype[1] == TEXTOID;
  if (!shaped) {
    index_close(index, NoLock);
    table_close(rel, NoLock);
    return false;
  }
  *opened = {rel, index};
  return true;
}

// The key's visible row under `snapshot` in a slot of its own (holding its
// buffer pin), or nullptr. Call inside PgCall.
TupleTableSlot* Find(const Opened& opened, const args::KeyRef& key, Snapshot snapshot) {
  ScanKeyData keys[2];
  // The index's own collations, as the planner would use for k.scope = $1.
  ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, opened.index->rd_indcollation[0], F_TEXTEQ,
                         PointerGetDatum(key.scope));
  ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid, opened.index->rd_indcollation[1], F_TEXTEQ,
                         PointerGetDatum(key.key));
  TupleTableSlot* slot = table_slot_create(opened.rel, nullptr);
  const IndexScanDesc scan = index_beginscan(opened.rel, opened.index, snapshot, 2, 0);
  index_rescan(scan, keys, 2, nullptr, 0);
  const bool found = index_getnext_slot(scan, ForwardScanDirection, slot);
  index_endscan(scan);
  if (found) return slot;
  ExecDropSingleTupleTableSlot(slot);
  return nullptr;
}

void Close(const Opened& opened, TupleTableSlot* slot) {
  if (slot != nullptr) ExecDropSingleTupleTableSlot(slot);
  index_close(opened.index, NoLock);  // locks stay to the end of the transaction, as the executor's do
  table_close(opened.rel, NoLock);
}

Datum Column(TupleTableSlot* slot, int column, bool* isnull) { return slot_getattr(slot, cache.column[column], isnull); }

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
      result.completed = DatumGetObjectId(Column(slot, kState, &isnull)) == cache.completed;
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
