#include "request/standby.hpp"

#include <string>

#include "pg/boundary.hpp"

#include "pg/pg_headers.hpp"
#include "access/xlog.h"

namespace pgi::standby {

void RequirePrimary(const char* verb, const args::KeyRef* key, const char* why) {
  // RecoveryInProgress() only reads shared memory (and stays false for the
  // rest of the backend once recovery has ended): it cannot error.
  if (!RecoveryInProgress()) return;
  const std::string subject = key != nullptr ? "idempotency " + args::Describe(*key) : "expired idempotency keys";
  throw Error(ERRCODE_READ_ONLY_SQL_TRANSACTION, std::string("cannot ") + verb + " " + subject + " on a hot standby",
              why != nullptr ? why : "This server is in recovery (a read replica) and cannot write.",
              key != nullptr ? std::string("Send the request to the primary and ") + verb +
                                   " the key there; a standby serves only replays, mismatches and keys in progress."
                             : "Run it on the primary.");
}

}  // namespace pgi::standby
