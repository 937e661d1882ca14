#include "keys/keys_table.hpp"

#include <cstring>

#include "pg/pg_compat.hpp"

extern "C" {
#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_opfamily_d.h"
#include "commands/extension.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/relcache.h"
#include "utils/rls.h"
#include "utils/syscache.h"
}

namespace pgi::keys_table {
namespace {
struct ColumnSpec {
  const char* name;
  Oid type;  // InvalidOid: the state enum
  bool optional = false;  // added by a later version: a database not yet updated lacks it
};

// The columns read, by name and type: a column dropped, re-added or retyped
// (ALTER TABLE) moves or disappears, and then the SPI statement decides.
const ColumnSpec kSpecs[kColumns] = {
    {"scope", TEXTOID},
    {"key", TEXTOID},
    {"fingerprint", BYTEAOID},
    {"state", InvalidOid},
    {"token", INT8OID},
    {"attempt", INT4OID},
    {"recovery_point", TEXTOID},
    {"locked_until", TIMESTAMPTZOID},
    {"created_at", TIMESTAMPTZOID},
    {"completed_at", TIMESTAMPTZOID},
    {"expires_at", TIMESTAMPTZOID},
    {"response_status", INT4OID},
    {"response_headers", JSONBOID},
    {"response_body", BYTEAOID},
    {"trace_context", TEXTOID, true},
};

// What is known of idempotency.keys in this backend. Filled while the table
// is locked; `valid` is cleared by any relcache invalidation of the table (or
// of every relation), which is how DROP/CREATE EXTENSION, ALTER TABLE,
// REINDEX, VACUUM FULL, GRANT/REVOKE and CREATE TABLE ... INHERITS reach us.
struct Cache {
  bool valid;
  bool usable;    // false: the table is not of the expected shape, or Citus is installed
  bool only_ours;  // every column is one of ours (an insert fills them all)
  Oid relid;
  AttrNumber column[kColumns];
  Oid completed;    // pg_enum OID of 'completed'::idempotency.state
  Oid in_progress;  // and of 'in_progress'
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

Oid EnumLabel(Oid type, const char* name) {
  const HeapTuple label = SearchSysCache2(ENUMTYPOIDNAME, ObjectIdGetDatum(type), CStringGetDatum(name));
  if (!HeapTupleIsValid(label)) return InvalidOid;
  const Oid oid = reinterpret_cast<Form_pg_enum>(GETSTRUCT(label))->oid;
  ReleaseSysCache(label);
  return oid;
}

// Fills the cache from the locked relation.
void Fill(Relation rel) {
  const uint64 seen = invalidations;
  cache = {};
  cache.relid = RelationGetRelid(rel);
  if (!OidIsValid(get_extension_oid("citus", true))) {
    const TupleDesc desc = RelationGetDescr(rel);
    bool complete = true;
    int known = 0;
    for (int c = 0; c < kColumns && complete; c++) {
      complete = kSpecs[c].optional;
      for (int i = 0; i < desc->natts; i++) {
        const Form_pg_attribute attribute = TupleDescAttr(desc, i);
        if (attribute->attisdropped || strcmp(NameStr(attribute->attname), kSpecs[c].name) != 0) continue;
        complete = kSpecs[c].type != InvalidOid ? attribute->atttypid == kSpecs[c].type
                                                : get_typtype(attribute->atttypid) == TYPTYPE_ENUM;
        cache.column[c] = attribute->attnum;
        known++;
        break;
      }
    }
    if (complete) {
      const Oid state_type = TupleDescAttr(desc, cache.column[kState] - 1)->atttypid;
      cache.completed = EnumLabel(state_type, "completed");
      cache.in_progress = EnumLabel(state_type, "in_progress");
      cache.usable = OidIsValid(cache.completed) && OidIsValid(cache.in_progress);
      int live = 0;
      for (int i = 0; i < desc->natts; i++) live += TupleDescAttr(desc, i)->attisdropped ? 0 : 1;
      cache.only_ours = live == known;
    }
  }
  // An invalidation taken in while filling (catalog reads accept them) may
  // describe a change this fill missed: use the result once, keep it not.
  cache.valid = invalidations == seen;
}


}  // namespace

bool Open(Access access, Opened* opened) {
  if (CitusPreloaded()) return false;
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, 0);
    callback_registered = true;
  }
  const Oid relid = cache.valid ? cache.relid : KeysRelid();
  if (!OidIsValid(relid)) return false;
  // Locking accepts pending invalidations: a drop, rename or ALTER committed
  // meanwhile is seen here, and then the name must still lead to this table.
  const LOCKMODE mode = access == Access::Read ? AccessShareLock : RowExclusiveLock;
  const Relation rel = try_table_open(relid, mode);
  if (rel == nullptr) return false;
  if (!cache.valid || cache.relid != relid) {
    if (KeysRelid() != relid) {
      table_close(rel, NoLock);
      return false;
    }
    Fill(rel);
  }
  const Form_pg_class form = rel->rd_rel;
  // An UPDATE or DELETE reads the columns of its WHERE clause: SELECT as well.
  const AclMode needed = access == Access::Read     ? ACL_SELECT
                         : access == Access::Insert ? ACL_INSERT
                         : access == Access::Update ? ACL_UPDATE | ACL_SELECT
                                                    : ACL_DELETE | ACL_SELECT;
  const TupleConstr* constraints = RelationGetDescr(rel)->constr;
  // A read-only transaction (BEGIN READ ONLY, default_transaction_read_only)
  // or parallel mode: the statement refuses the write with its own error
  // (25006 ...); table_tuple_insert and friends do not check.
  const bool writable = access == Access::Read ||
                        (!XactReadOnly && !IsInParallelMode() && cache.only_ours && rel->trigdesc == nullptr &&
                         (constraints == nullptr || !constraints->has_generated_stored) &&
                         (access == Access::Insert || !IsolationUsesXactSnapshot()));
  const bool safe = cache.usable && writable && form->relkind == RELKIND_RELATION &&
                    form->relam == HEAP_TABLE_AM_OID && !form->relhassubclass &&
                    pg_class_aclmask(relid, GetUserId(), needed, ACLMASK_ALL) == needed &&
                    (!form->relrowsecurity || check_enable_rls(relid, InvalidOid, true) != RLS_ENABLED);
  const Oid primary_key = safe ? compat::PrimaryKeyIndex(rel) : InvalidOid;
  if (!OidIsValid(primary_key)) {
    table_close(rel, NoLock);
    return false;
  }
  const Relation index = index_open(primary_key, mode);
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

void Close(const Opened& opened) {
  index_close(opened.primary_key, NoLock);
  table_close(opened.rel, NoLock);
}

AttrNumber Attnum(Column column) { return cache.column[column]; }

bool Has(Column column) { return cache.column[column] != 0; }

Oid StateLabel(bool completed) { return completed ? cache.completed : cache.in_progress; }

bool HasTraceContextColumn() {
  const Oid relid = KeysRelid();
  return OidIsValid(relid) && get_attnum(relid, kSpecs[kTraceContext].name) != InvalidAttrNumber;
}

}  // namespace pgi::keys_table
