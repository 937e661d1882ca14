#include "request/replicated_shards.hpp"

#include <string>

#include "keys/citus.hpp"
#include "pg/boundary.hpp"

#include "pg/pg_headers.hpp"

namespace pgi::replicated_shards {
namespace {

constexpr const char* kHint =
    "Distribute idempotency.keys, and the tables co-located with it, with citus.shard_replication_factor = 1 (the "
    "default), and get high availability from streaming replicas of each node. Finish or release the keys in flight "
    "first: finish, release, lookup and replays still work.";

bool warned = false;  // this backend has said it once

int Copies() {
  return PgCall([] { return citus::KeysShardCopies(); });
}

}  // namespace

void RefuseTakeover(const char* verb, const args::KeyRef& key) {
  const int copies = Copies();
  if (copies <= 1) return;
  throw Error(ERRCODE_FEATURE_NOT_SUPPORTED,
              std::string("cannot ") + verb + " idempotency " + args::Describe(key) +
                  ": idempotency.keys is distributed with " + std::to_string(copies) +
                  " copies of a shard (citus.shard_replication_factor > 1)",
              "Taking over an expired key or one whose lease ran out locks its row, and Citus refuses row locks on "
              "a table whose shards have more than one copy.",
              kHint);
}

void WarnOnNewKey() {
  if (warned) return;
  const int copies = Copies();
  if (copies <= 1) return;
  warned = true;
  PgCall([copies] {
    ereport(WARNING,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
             errmsg("idempotency.keys is distributed with %d copies of a shard (citus.shard_replication_factor > 1): "
                    "new keys work, but taking over an expired key or a lapsed lease will be refused",
                    copies),
             errhint("%s", kHint)));
  });
}

}  // namespace pgi::replicated_shards
