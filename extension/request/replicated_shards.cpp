#include "request/replicated_shards.hpp"

#include <string>

#include "keys/citus.hpp"
#include "pg/boundary.hpp"

#include "pg/pg_headers.hpp"

namespace pgi::replicated_shards {

void Refuse(const char* verb, const args::KeyRef& key) {
  const int copies = PgCall([] { return citus::KeysShardCopies(); });
  if (copies <= 1) return;
  throw Error(ERRCODE_FEATURE_NOT_SUPPORTED,
              std::string("cannot ") + verb + " idempotency " + args::Describe(key) +
                  ": idempotency.keys is distributed with " + std::to_string(copies) +
                  " copies of a shard (citus.shard_replication_factor > 1)",
              "Taking over an expired key or one whose lease ran out locks its row, and Citus refuses row locks on "
              "a table whose shards have more than one copy; pg_idempotency takes no key there at all rather than "
              "fail at the first takeover.",
              "Distribute idempotency.keys, and the tables co-located with it, with citus.shard_replication_factor "
              "= 1 (the default), and get high availability from streaming replicas of each node. Finish or release "
              "the keys in flight first: finish, release, lookup and replays still work.");
}

}  // namespace pgi::replicated_shards
