// Deleting expired keys without SPI: the sweep's batch as an expires_at
// index scan and one heap delete per row.
//
// The SQL sweep (sweep_sql.hpp) picks its rows with FOR UPDATE SKIP LOCKED
// and then deletes them: every swept row is written twice (a row lock, then
// the delete), each a WAL record, and a batch pays a planned statement's
// start-up and a TID scan on top. Here a row that is sweepable under a fresh
// READ COMMITTED snapshot is deleted at once with table_tuple_delete(wait =
// false): a row a claim is writing, has locked or has changed since the
// snapshot is skipped, never waited for, exactly the rows SKIP LOCKED would
// skip (a changed row is left for the next turn, where the statement would
// re-check it). The delete itself is the executor's: TOAST, WAL, the
// replica identity for logical decoding, the visibility map and statistics.
//
// Taken only where keys_table::Open(Access::Delete) allows it (privileges,
// no RLS, no triggers such as a foreign key's, READ COMMITTED, no Citus) and
// the table has a plain ascending btree on expires_at; anything else answers
// "not here" with nothing deleted, and the caller runs the SQL statement.
#pragma once

#include <cstdint>
#include <optional>

#include "pg/pg_headers.hpp"

namespace pgi::direct_sweep {

// Deletes up to `limit` rows expired at `now` (never an in_progress row whose
// lease is still running), oldest expiry first, from expiry *from on (start
// with DT_NOBEGIN), and moves *from to the latest expiry deleted, as
// sweep_sql::Form::LocalFrom does. std::nullopt: not safe here, nothing
// deleted, *from untouched.
std::optional<uint64> DeleteExpired(TimestampTz now, int64 limit, TimestampTz* from);

}  // namespace pgi::direct_sweep
