// Running a PostgreSQL operation that may wait on a lock, for at most a
// given time, and learning "timed out" as an answer rather than an error.
#pragma once

#include "pg/pg_headers.hpp"

namespace pgi::bounded_wait {

// Runs fn (PostgreSQL calls only, trivially destructible locals) with
// lock_timeout = timeout_ms in a subtransaction. True when fn completed (its
// effects and locks move to the caller's transaction); false when a lock wait
// ran out or deadlocked (fn's effects are rolled back). Other errors propagate
// unchanged, after the subtransaction is rolled back.
// Call only inside PgCall.
template <typename Fn>
bool Run(int timeout_ms, Fn&& fn);

// For waits that lock_timeout cannot bound because they happen on another
// server (a Citus worker): fn must not wait but fail at once with 55P03
// (e.g. FOR UPDATE NOWAIT). Runs fn as Run does, again every few
// milliseconds until it completes (true) or timeout_ms has passed (false);
// at least once. Call only inside PgCall.
template <typename Fn>
bool Poll(int timeout_ms, Fn&& fn);

}  // namespace pgi::bounded_wait

#include "pg/bounded_wait_impl.hpp"
