// Citus with more than one copy of each shard (citus.shard_replication_factor
// > 1): Citus refuses every row lock on such a table, and a claim that finds
// an expired key or a lapsed lease must lock the row to take it over. Rather
// than work for new keys and fail later, at the first takeover, with Citus'
// own error and misleading hint, every call that may take a key refuses at
// once, naming the setting and what to do. Replays, finish, checkpoint,
// release, lookup and sweep() take no row lock and go on working, so keys in
// flight can be finished while the table is rebuilt.
#pragma once

#include "pg/args.hpp"

namespace pgi::replicated_shards {

// Throws Error 0A000 (feature_not_supported) when idempotency.keys is
// distributed by Citus with more than one copy of a shard. verb: what the
// call was to do ("claim", "process"). Costs one cached answer per backend;
// without Citus the answer is "no" after one lookup.
void Refuse(const char* verb, const args::KeyRef& key);

}  // namespace pgi::replicated_shards
