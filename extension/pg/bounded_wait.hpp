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
// server (a Citus worker). try_once must not wait and must not raise for a
// lock it cannot have (e.g. FOR UPDATE SKIP LOCKED, not NOWAIT: every raised
// error is a line in that server's log); it returns true when done. Calls it
// at once, then again after pauses that grow from 5 to 50 ms (a waiter costs
// the other server at most a few statements every 50 ms), until it returns
// true (true) or timeout_ms has passed (false). No subtransaction: what
// try_once does stays in the caller's transaction. Call only inside PgCall.
template <typename Fn>
bool Poll(int timeout_ms, Fn&& try_once);

}  // namespace pgi::bounded_wait

#include "pg/bounded_wait_impl.hpp"
