#include "keys/keys.hpp"

#include <optional>

#include "keys/direct_read.hpp"
#include "keys/direct_sweep.hpp"
#include "keys/direct_write.hpp"
#include "keys/keys_table.hpp"
#include "pg/boundary.hpp"
#include "keys/store.hpp"

namespace pgi::keys {

KeyRow FirstLook(const args::KeyRef& key, Link& spi, bool traced) {
  KeyRow row{};
  if (direct_read::Read(key, &row)) return row;
  spi.Need();
  return store::FirstLook(key, traced);
}

KeyRow Read(const args::KeyRef& key, Link& spi, bool traced) {
  spi.Need();
  return store::Read(key, traced);
}

Presence Probe(const args::KeyRef& key) { return direct_read::Probe(key); }

ClaimedRow Insert(const args::KeyRef& key, const NewClaim& claim, Link& spi) {
  spi.Need();
  return store::Insert(key, claim);
}

ClaimedRow InsertAbsent(const args::KeyRef& key, const NewClaim& claim, Link& spi) {
  if (direct_write::InsertAbsent(key, claim)) return store::Inserted(claim);
  spi.Need();
  return store::InsertAbsent(key, claim);
}

ClaimedRow TakeOver(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms, Link& spi) {
  spi.Need();
  return store::TakeOver(key, claim, row_wait_ms);
}

ClaimedRow InsertCompleted(const args::KeyRef& key, const NewClaim& claim, Link& spi) {
  if (direct_read::Probe(key) == Presence::Absent && direct_write::InsertAbsent(key, claim, /*completed=*/true))
    return store::Inserted(claim);
  spi.Need();
  return store::InsertCompleted(key, claim);
}

ClaimedRow TakeOverCompleted(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms, Link& spi) {
  spi.Need();
  return store::TakeOverCompleted(key, claim, row_wait_ms);
}

bool StoresTraceContext() {
  return PgCall([] { return keys_table::HasTraceContextColumn(); });
}

bool Complete(const args::KeyRef& key, int64 token, TimestampTz now, const Response& response, Link& spi) {
  switch (direct_write::Complete(key, token, now, response)) {
    case direct_write::Completion::Stored:
      return true;
    case direct_write::Completion::NotHeld:
      return false;
    case direct_write::Completion::Unknown:
      break;
  }
  spi.Need();
  return store::Complete(key, token, now, response);
}

bool Checkpoint(const args::KeyRef& key, int64 token, TimestampTz now, text* recovery_point, TimestampTz locked_until,
                Link& spi) {
  spi.Need();
  return store::Checkpoint(key, token, now, recovery_point, locked_until);
}

bool Release(const args::KeyRef& key, int64 token, TimestampTz now, Link& spi) {
  spi.Need();
  return store::Release(key, token, now);
}

Datum LookupLive(const args::KeyRef& key, TimestampTz now, MemoryContext into, Link& spi) {
  Datum row = 0;
  if (direct_read::LookupLive(key, now, into, &row)) return row;
  spi.Need();
  return store::LookupLive(key, now, into);
}

uint64 SweepExpired(TimestampTz now, int64 limit, Link& spi) {
  TimestampTz from = DT_NOBEGIN;
  if (const std::optional<uint64> deleted = direct_sweep::DeleteExpired(now, limit, &from)) return *deleted;
  spi.Need();
  return store::SweepExpired(now, limit);
}

uint64 SweepExpiredFrom(TimestampTz now, int64 limit, TimestampTz* from, Link& spi) {
  if (const std::optional<uint64> deleted = direct_sweep::DeleteExpired(now, limit, from)) return *deleted;
  spi.Need();
  return store::SweepExpiredFrom(now, limit, from);
}

}  // namespace pgi::keys
