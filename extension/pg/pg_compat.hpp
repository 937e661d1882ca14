// Every difference between the PostgreSQL majors this extension builds for
// (15, 16, 17 and 18), in one place.
//
// Each PostgreSQL call whose signature or name changed is wrapped here in a
// small inline function named after what it does, and each is guarded at the
// version where the API changed. The rest of extension/ calls these and never
// tests PG_VERSION_NUM itself. Like the calls they wrap, they may raise a
// PostgreSQL error: call them inside PgCall with trivially destructible locals.
#pragma once

#include "pg/pg_headers.hpp"

extern "C" {
#include "access/genam.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "executor/executor.h"
#include "utils/acl.h"
#include "utils/backend_status.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif
}

#if PG_VERSION_NUM < 150000
#error "pg_idempotency needs PostgreSQL 15 or later"
#endif

namespace pgi::compat {

// The range table of a one-relation write done without a plan: just `entry`
// (range table index 1), as logical replication's apply worker sets it up.
// 16 keeps permission details in RTEPermissionInfo entries of their own: the
// constraint-violation error path looks the entry up (for the columns it may
// show) and errors itself when there is none. 18 also wants the relations
// left after partition pruning: here the one relation.
inline void InitOneRelationRangeTable(EState* estate, RangeTblEntry* entry) {
#if PG_VERSION_NUM >= 160000
  List* permission_infos = NIL;
  addRTEPermissionInfo(&permission_infos, entry);
#if PG_VERSION_NUM >= 180000
  ExecInitRangeTable(estate, list_make1(entry), permission_infos, bms_make_singleton(1));
#else
  ExecInitRangeTable(estate, list_make1(entry), permission_infos);
#endif
#else
  ExecInitRangeTable(estate, list_make1(entry));
#endif
}

// What table_tuple_update says about the new row version's index entries:
// a bool before 16; since 16 TU_UpdateIndexes, which tells "only the
// summarizing indexes (BRIN)" apart from "all of them".
#if PG_VERSION_NUM >= 160000
using IndexesToUpdate = TU_UpdateIndexes;
constexpr IndexesToUpdate kNoIndexesToUpdate = TU_None;
#else
using IndexesToUpdate = bool;
constexpr IndexesToUpdate kNoIndexesToUpdate = false;
#endif

// After a successful table_tuple_update that was not HOT: inserts the new
// version's entries into the indexes that need them, as ModifyTable does.
// Returns the indexes whose constraints need a recheck (NIL here, where none
// is deferred), or NIL at once when no index needs an entry.
inline List* InsertIndexEntriesAfterUpdate(ResultRelInfo* relation, TupleTableSlot* slot, EState* estate,
                                           IndexesToUpdate which) {
  if (which == kNoIndexesToUpdate || relation->ri_NumIndices == 0) return NIL;
#if PG_VERSION_NUM >= 160000
  return ExecInsertIndexTuples(relation, slot, estate, true, false, nullptr, NIL, which == TU_Summarizing);
#else
  return ExecInsertIndexTuples(relation, slot, estate, true, false, nullptr, NIL);
#endif
}

// Starts a scan of index on heap with nkeys scan keys and no ORDER BY keys.
// 18 added an instrumentation argument (EXPLAIN ANALYZE's index searches);
// this scan is not instrumented.
inline IndexScanDesc BeginIndexScan(Relation heap, Relation index, Snapshot snapshot, int nkeys) {
#if PG_VERSION_NUM >= 180000
  return index_beginscan(heap, index, snapshot, nullptr, nkeys, 0);
#else
  return index_beginscan(heap, index, snapshot, nkeys, 0);
#endif
}

// The relation's primary key index, InvalidOid when it has none. A deferrable
// primary key does not count: before 18 the relcache never reported one, and
// 18 reports it only when asked to.
inline Oid PrimaryKeyIndex(Relation rel) {
#if PG_VERSION_NUM >= 180000
  return RelationGetPrimaryKeyIndex(rel, false);
#else
  return RelationGetPrimaryKeyIndex(rel);
#endif
}

// Whether role owns the database (or is a superuser). 16 replaced the
// per-catalog pg_*_ownercheck functions with object_ownercheck.
inline bool IsDatabaseOwner(Oid database, Oid role) {
#if PG_VERSION_NUM >= 160000
  return object_ownercheck(DatabaseRelationId, database, role);
#else
  return pg_database_ownercheck(database, role);
#endif
}

// The index-th entry (1-based, up to pgstat_fetch_stat_numbackends()) of this
// backend's snapshot of the backend status array; null when out of range. 16
// renamed pgstat_fetch_stat_local_beentry; the index is still 1-based.
inline LocalPgBackendStatus* LocalBackendStatus(int index) {
#if PG_VERSION_NUM >= 160000
  return pgstat_get_local_beentry_by_index(index);
#else
  return pgstat_fetch_stat_local_beentry(index);
#endif
}

}  // namespace pgi::compat
