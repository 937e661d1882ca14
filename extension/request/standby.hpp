// Hot standby: calls that would have to write refuse with 25006 before they
// take a lock or run a statement, so the error names the key and says where to
// go, instead of surfacing an internal INSERT as "read-only transaction".
#pragma once

#include "pg/args.hpp"

namespace pgi::standby {

// Throws Error 25006 (read_only_sql_transaction) when this server is a hot
// standby. verb: what the call does ("claim", "finish", ...); key may be null
// (sweep); why: the detail, or null for the generic one.
void RequirePrimary(const char* verb, const args::KeyRef* key, const char* why = nullptr);

}  // namespace pgi::standby
