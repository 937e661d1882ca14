#include "keys/citus.hpp"

#include "pg/pg_headers.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "nodes/pg_list.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"
}

namespace pgi::citus {
namespace {

// Column 1 of pg_dist_partition is logicalrelid (regclass) in every Citus
// version that has the table.
constexpr AttrNumber kLogicalRelidColumn = 1;

// One remembered answer: enough, since the extension asks about one table.
struct Cached {
  bool valid;
  Oid relid;
  bool is_citus_table;
};
Cached cached = {false, InvalidOid, false};
bool callback_registered = false;

// CREATE/DROP EXTENSION citus and create_distributed_table all invalidate
// the relation's relcache entry (or everything: relid 0).
void OnRelcacheInvalidation(Datum, Oid relid) {
  if (relid == InvalidOid || relid == cached.relid) cached.valid = false;
}

bool LookUp(Oid relid) {
  if (!OidIsValid(get_extension_oid("citus", true))) return false;
  const Oid partitions = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
  if (!OidIsValid(partitions)) return false;
  Relation rel = table_open(partitions, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, kLogicalRelidColumn, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
  // No index: pg_dist_partition has one row per Citus table, and the answer is cached.
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 1, &key);
  const bool found = HeapTupleIsValid(systable_getnext(scan));
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return found;
}

}  // namespace

bool IsCitusTable(Oid relid) {
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, 0);
    callback_registered = true;
  }
  if (cached.valid && cached.relid == relid) return cached.is_citus_table;
  const bool answer = LookUp(relid);
  cached = {true, relid, answer};
  return answer;
}

Oid KeysTable() {
  const Oid schema = get_namespace_oid("idempotency", true);
  return OidIsValid(schema) ? get_relname_relid("keys", schema) : InvalidOid;
}

List* LocalShards() {
  // Citus' own catalog and shard_name(); this runs only where IsCitusTable
  // said Citus is here. The local group is 0 on the coordinator.
  static const char* const kSql =
      "SELECT pg_catalog.shard_name(s.logicalrelid, s.shardid) FROM pg_catalog.pg_dist_shard AS s"
      " WHERE s.logicalrelid OPERATOR(pg_catalog.=) 'idempotency.keys'::pg_catalog.regclass"
      "   AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_placement AS p"
      "        WHERE p.shardid OPERATOR(pg_catalog.=) s.shardid) OPERATOR(pg_catalog.=) 1"
      "   AND EXISTS (SELECT FROM pg_catalog.pg_dist_placement AS p, pg_catalog.pg_dist_local_group AS g"
      "        WHERE p.shardid OPERATOR(pg_catalog.=) s.shardid AND p.groupid OPERATOR(pg_catalog.=) g.groupid)"
      " ORDER BY s.shardid";
  MemoryContext caller = CurrentMemoryContext;
  const int rc = SPI_execute(kSql, true, 0);
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "pg_idempotency: listing the local shards failed: %s", SPI_result_code_string(rc));
  List* shards = NIL;
  for (uint64 i = 0; i < SPI_processed; i++) {
    char* name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
    if (name == nullptr) continue;
    MemoryContext previous = MemoryContextSwitchTo(caller);
    shards = lappend(shards, pstrdup(name));
    MemoryContextSwitchTo(previous);
  }
  return shards;
}

}  // namespace pgi::citus
