// Citus with more than one copy of each shard (citus.shard_replication_factor
// > 1): Citus refuses every row lock on such a table, and a claim or once()
// that finds an expired key or a lapsed lease must lock the row to take it
// over. Such a takeover is refused with our own error, which names the
// setting and says what to do, instead of Citus' 0A000 and its misleading
// hint. New keys (a plain insert) keep working, so a cluster that ran 1.1 on
// such a layout does not stop at the upgrade; each backend says once, with a
// WARNING, that its takeovers will be refused. Replays, finish, checkpoint,
// release, lookup and sweep() take no row lock and work as before.
#pragma once

#include "pg/args.hpp"

namespace pgi::replicated_shards {

// Throws Error 0A000 (feature_not_supported) when idempotency.keys is
// distributed by Citus with more than one copy of a shard. verb: what the
// call was to do ("take over", "process"). Costs one cached answer per
// backend; without Citus the answer is "no" after one lookup.
void RefuseTakeover(const char* verb, const args::KeyRef& key);

// The same test before a new key is inserted: a WARNING, once per backend,
// that takeovers on this layout will be refused; nothing else changes.
void WarnOnNewKey();

}  // namespace pgi::replicated_shards
