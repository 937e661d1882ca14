#include "request/token.hpp"

#include "pg/boundary.hpp"

namespace pgi::token {

// Fencing tokens must be unique per claim, not secret (the row they fence is
// reached only with the caller's privileges and RLS). A per-process PRNG seeded
// from the strong source once is far cheaper than pg_strong_random per claim;
// it is seeded lazily so that backends forked from a preloading postmaster
// never share a sequence.
int64 New() {
  static pg_prng_state state;
  static int seeded_pid = 0;
  if (seeded_pid != MyProcPid) {
    if (!pg_prng_strong_seed(&state)) throw Error(ERRCODE_INTERNAL_ERROR, "could not seed the fencing token generator");
    seeded_pid = MyProcPid;
  }
  // Positive and non-zero: easier to log, and never confused with "no token".
  const int64 token = static_cast<int64>(pg_prng_uint64(&state) & static_cast<uint64>(PG_INT64_MAX));
  return token == 0 ? 1 : token;
}

}  // namespace pgi::token
