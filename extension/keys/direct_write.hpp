// Writing a key's row without SPI: a new key's INSERT and finish()'s UPDATE.
//
// Through SPI each is a planned statement whose executor start-up and
// shutdown cost more than the write itself; here the row goes through the
// same table and index calls the executor makes (ExecSimpleRelationInsert,
// table_tuple_update, ExecInsertIndexTuples, ExecConstraints), so every
// index (partial or expression ones included), NOT NULL and CHECK constraint,
// TOAST, WAL, statistics and serializable check is as the statement's. Taken
// only where keys_table::Open allows it (no RLS, privileges, no triggers, ...);
// anything else, or a row that moved under us, answers "not here" with
// nothing written, and the caller runs the SPI statement. Each function runs
// its PostgreSQL calls inside one PgCall and advances the command counter
// after writing, as SPI does, so later reads in the statement see the row.
#pragma once

#include "keys/store.hpp"
#include "pg/args.hpp"

namespace pgi::direct_write {

// As store::InsertAbsent, or (completed) store::InsertCompleted without its
// ON CONFLICT: the key must be known to be absent. False: not safe here,
// nothing written.
bool InsertAbsent(const args::KeyRef& key, const store::NewClaim& claim, bool completed = false);

// As store::Complete: stores the response when the key is in progress under
// `token` and live at `now`.
enum class Completion { Stored, NotHeld, Unknown };  // Unknown: use the SPI statement
Completion Complete(const args::KeyRef& key, int64 token, TimestampTz now, const store::Response& response);

}  // namespace pgi::direct_write
