// What the extension needs to know about Citus, in one place.
//
// When idempotency.keys is distributed by Citus (create_distributed_table on
// the coordinator), the table a node sees under that name is a shell: its
// rows live in shard tables (idempotency.keys_<shardid>) on the workers. Every
// statement the extension runs names the full key, scope first, so Citus
// routes it to one shard and nothing here is needed for it. Two things are:
//   - reading the heap directly (without SPI) would miss every row of a
//     shell, so a direct read must ask IsCitusTable first;
//   - the background sweeper of each node sweeps the shards stored on that
//     node (LocalShards), one plain table at a time.
// Without Citus in the database every answer is "not a Citus table" and the
// cost is one cached lookup.
#pragma once

#include "pg/pg_headers.hpp"

namespace pgi::citus {

// Whether relid is a table Citus manages (distributed, reference or Citus
// local table: listed in pg_dist_partition), so its rows are not in its own
// heap. False when Citus is not installed in this database. No SPI: a scan of
// pg_dist_partition, cached per backend until the relation's relcache entry
// is invalidated (create_distributed_table and undistribute_table do that).
// May raise a PostgreSQL error: call inside PgCall.
bool IsCitusTable(Oid relid);

// idempotency.keys's oid, InvalidOid if it does not exist. Call inside PgCall.
Oid KeysTable();

// The most copies (placements) any shard of idempotency.keys has when Citus
// distributes it by a column (hash, range or append; created with
// citus.shard_replication_factor > 1, or copied since); 0 otherwise: Citus
// absent, the table not distributed, or a reference or Citus local table
// (whose row locks Citus runs). Citus refuses every row lock (FOR UPDATE) on
// a table whose shards have more than one copy, which a takeover needs.
// No SPI: scans of pg_dist_partition, pg_dist_shard and pg_dist_placement
// (on the coordinator and on every worker with metadata, the default), cached
// per backend until idempotency.keys's relcache entry is invalidated (Citus
// does that whenever a placement of one of its shards is added or removed).
// Without Citus the cached answer is 0 after one lookup. May raise a
// PostgreSQL error: call inside PgCall.
int KeysShardCopies();

// The shards of idempotency.keys stored on this node that have a single
// placement, as schema-qualified, quoted names (char*) in the current memory
// context; NIL when there are none. A shard with more than one placement
// (citus.shard_replication_factor > 1, or a reference table) is left to
// sweep() through the coordinator, which keeps its copies equal.
// Needs SPI connected; call inside PgCall.
List* LocalShards();

}  // namespace pgi::citus
