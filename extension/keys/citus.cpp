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
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

namespace pgi::citus {
namespace {

// Column 1 of pg_dist_partition and of pg_dist_shard is logicalrelid
// (regclass), column 2 pg_dist_partition's partmethod ("char") and
// pg_dist_shard's shardid (bigint), in every Citus version that has them.
// pg_dist_placement's columns changed over the versions: found by name.
constexpr AttrNumber kLogicalRelidColumn = 1;
constexpr AttrNumber kPartMethodColumn = 2;
constexpr AttrNumber kShardIdColumn = 2;
// partmethod of reference tables, Citus local tables and single-shard
// tables: Citus runs row locks on them.
constexpr char kNoDistributionColumn = 'n';

// One remembered answer: enough, since the extension asks about one table.
struct Cached {
  bool valid;
  Oid relid;
  bool is_citus_table;
};
Cached cached = {false, InvalidOid, false};

// KeysShardCopies's remembered answer, for the table it was about.
struct CachedCopies {
  bool valid;
  Oid relid;
  int copies;
};
CachedCopies cached_copies = {false, InvalidOid, 0};
uint64 invalidations = 0;  // of cached_copies' table: an answer raced by one is used once, not kept
bool callback_registered = false;

// CREATE/DROP EXTENSION citus and create_distributed_table all invalidate
// the relation's relcache entry (or everything: relid 0).
void OnRelcacheInvalidation(Datum, Oid relid) {
  if (relid == InvalidOid || relid == cached.relid) cached.valid = false;
  if (relid == InvalidOid || relid == cached_copies.relid) {
    cached_copies.valid = false;
    invalidations++;
  }
}

void RegisterCallback() {
  if (!callback_registered) {
    CacheRegisterRelcacheCallback(OnRelcacheInvalidation, 0);
    callback_registered = true;
  }
}

Oid CitusCatalog(const char* name) { return get_relname_relid(name, PG_CATALOG_NAMESPACE); }

// The partmethod of relid in pg_dist_partition; '\0' when it is not there.
char PartMethod(Oid relid) {
  const Oid partitions = CitusCatalog("pg_dist_partition");
  if (!OidIsValid(partitions)) return '\0';
  Relation rel = table_open(partitions, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, kLogicalRelidColumn, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 1, &key);
  char method = '\0';
  const HeapTuple tuple = systable_getnext(scan);
  if (HeapTupleIsValid(tuple)) {
    bool isnull = false;
    const Datum d = heap_getattr(tuple, kPartMethodColumn, RelationGetDescr(rel), &isnull);
    method = isnull ? '?' : DatumGetChar(d);
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return method;
}

// The shard ids of relid (pg_dist_shard), palloc'd; *count of them.
int64* ShardIds(Oid relid, int* count) {
  *count = 0;
  const Oid shards_catalog = CitusCatalog("pg_dist_shard");
  if (!OidIsValid(shards_catalog)) return nullptr;
  Relation rel = table_open(shards_catalog, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, kLogicalRelidColumn, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 1, &key);
  int room = 32;  // Citus' default shard count
  int64* ids = static_cast<int64*>(palloc(sizeof(int64) * room));
  for (HeapTuple tuple; HeapTupleIsValid(tuple = systable_getnext(scan));) {
    bool isnull = false;
    const Datum d = heap_getattr(tuple, kShardIdColumn, RelationGetDescr(rel), &isnull);
    if (isnull) continue;
    if (*count == room) {
      room *= 2;
      ids = static_cast<int64*>(repalloc(ids, sizeof(int64) * room));
    }
    ids[(*count)++] = DatumGetInt64(d);
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return ids;
}

// The most placements any of the shards has (pg_dist_placement); 0 without
// the catalog. One pass over the catalog, which holds a row per placement of
// every Citus table; the shards of one table are few.
int MostPlacements(const int64* shard_ids, int shard_count) {
  const Oid placements = CitusCatalog("pg_dist_placement");
  if (!OidIsValid(placements) || shard_count == 0) return 0;
  const AttrNumber shard_column = get_attnum(placements, "shardid");
  if (shard_column == InvalidAttrNumber) return 0;
  int* counts = static_cast<int*>(palloc0(sizeof(int) * shard_count));
  Relation rel = table_open(placements, AccessShareLock);
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 0, nullptr);
  int most = 0;
  for (HeapTuple tuple; HeapTupleIsValid(tuple = systable_getnext(scan));) {
    bool isnull = false;
    const Datum d = heap_getattr(tuple, shard_column, RelationGetDescr(rel), &isnull);
    if (isnull) continue;
    const int64 shard = DatumGetInt64(d);
    for (int i = 0; i < shard_count; i++) {
      if (shard_ids[i] != shard) continue;
      counts[i]++;
      most = Max(most, counts[i]);  // Max evaluates its arguments twice
      break;
    }
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  pfree(counts);
  return most;
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
  RegisterCallback();
  if (cached.valid && cached.relid == relid) return cached.is_citus_table;
  const bool answer = LookUp(relid);
  cached = {true, relid, answer};
  return answer;
}

Oid KeysTable() {
  const Oid schema = get_namespace_oid("idempotency", true);
  return OidIsValid(schema) ? get_relname_relid("keys", schema) : InvalidOid;
}

int KeysShardCopies() {
  RegisterCallback();
  if (cached_copies.valid) return cached_copies.copies;
  const Oid keys = KeysTable();
  if (!OidIsValid(keys)) return 0;  // nothing to remember: the table comes with the extension
  cached_copies = {false, keys, 0};
  const uint64 seen = invalidations;
  int copies = 0;
  if (OidIsValid(get_extension_oid("citus", true))) {
    const char method = PartMethod(keys);
    if (method != '\0' && method != kNoDistributionColumn) {
      int shard_count = 0;
      int64* ids = ShardIds(keys, &shard_count);
      copies = MostPlacements(ids, shard_count);
      if (ids != nullptr) pfree(ids);
    }
  }
  // Catalog reads take in invalidations; one that arrived meanwhile may
  // describe a change these scans missed.
  cached_copies = {invalidations == seen, keys, copies};
  return copies;
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
