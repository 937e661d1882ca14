#include "request/decide.hpp"

namespace pgi::decide {
namespace {
bool Expired(const Row& row, Micros now) { return row.expires_at <= now; }
}  // namespace

Verdict Judge(const std::optional<Row>& row, Micros now) {
  // Expired rows are gone as far as callers can tell, swept or not.
  if (!row || Expired(*row, now)) return Verdict::Acquire;
  // A different request under the same key wins over every other answer.
  if (row->fingerprints == Fingerprints::Different) return Verdict::Mismatch;
  if (row->completed) return Verdict::Replay;
  // in_progress: the lease decides between waiting and taking over.
  if (row->locked_until && *row->locked_until > now) return Verdict::InProgress;
  return Verdict::Acquire;
}

bool IsTakeover(const std::optional<Row>& row, Micros now) { return row && !Expired(*row, now) && !row->completed; }

}  // namespace pgi::decide
