// Running a PostgreSQL operation that may wait on a lock, for at most a
// given time, and learning "timed out" as an answer rather than an error.
#pragma once

#include "pg_headers.hpp"

namespace pgi::bounded_wait {

// Runs fn (PostgreSQL calls only, trivially destructible locals) with
// lock_timeout = timeout_ms in a subtransaction. True when fn completed (its
// effects and locks move to the caller's transaction); false when a lock wait
// ran out or deadlocked (fn's effects are rolled back). Other errors propagate
// unchanged, after the subtransaction is rolled back.
// Call only inside PgCall.
template <typename Fn>
bool Run(int timeout_ms, Fn&& fn);

}  // namespace pgi::bounded_wait

#include "bounded_wait_impl.hpp"
