// "Is another open transaction working on this key?"
//
// A transaction-scoped heavyweight lock on a tag made of the database oid and
// a 64-bit hash of (scope, key). It lives in the advisory lock tag space under
// a class number of its own (field4), so it never collides with the
// application's pg_advisory_* locks (classes 1 and 2). Every function that
// writes a key takes it first, so claim can tell "held by an open transaction"
// at once instead of blocking on that transaction's row.
#pragma once

#include "pg/args.hpp"

namespace pgi::key_lock {

// Tries at once, then (wait_us > 0) waits up to wait_us for the holder's
// transaction to end. True when held.
bool TryAcquire(const args::KeyRef& key, int64 wait_us);

// Waits as long as it takes (deadlock detection applies).
void Acquire(const args::KeyRef& key);

}  // namespace pgi::key_lock
