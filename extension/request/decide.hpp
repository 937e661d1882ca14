// claim's decision as a pure function of what the key's row says.
//
// No PostgreSQL headers here: GoogleTest covers every branch of the contract's
// claim table without a server (test/cxx/decide_test.cpp).
#pragma once

#include <cstdint>
#include <optional>

namespace pgi::decide {

// Microseconds, as TimestampTz counts them; all from the database clock.
using Micros = std::int64_t;

enum class Fingerprints {
  Unchecked,  // the row's or the caller's fingerprint is NULL
  Same,
  Different,
};

struct Row {
  bool completed = false;
  Micros expires_at = 0;
  std::optional<Micros> locked_until;  // NULL once completed
  Fingerprints fingerprints = Fingerprints::Unchecked;
};

enum class Verdict {
  Acquire,     // absent, expired or lease over: try to take the key
  Replay,      // completed: hand back the stored response
  InProgress,  // a holder's lease is still running
  Mismatch,    // same key, different request
};

// row == nullopt means no row is visible.
Verdict Judge(const std::optional<Row>& row, Micros now);

// An Acquire on a row that is there (not expired) is a takeover.
bool IsTakeover(const std::optional<Row>& row, Micros now);

}  // namespace pgi::decide
