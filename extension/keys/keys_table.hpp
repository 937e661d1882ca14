// What this backend knows of idempotency.keys, and whether touching it
// directly (without SPI) is safe for the caller right now.
//
// direct_read.hpp and direct_write.hpp read and write key rows with an index
// probe, heap_insert and heap_update instead of an SPI statement, where that
// does exactly what the statement would. Open() decides "where":
//   - idempotency.keys is a plain local heap table (not partitioned, no
//     inheritance children, heap access method) whose valid primary key is
//     (scope, key) in the default text btree operator family, with its
//     columns of the expected names and types;
//   - Citus is not loaded (on a coordinator the table is an empty shell whose
//     rows live in shards);
//   - the caller has the table privileges the statement needs (otherwise the
//     statement raises 42501 as before, or honours column privileges);
//   - row-level security does not apply to the caller (otherwise the
//     statement applies the policies, or raises as row_security = off does);
//   - to write: a transaction that may write (not READ ONLY, not in parallel
//     mode: the statement raises 25006 there), no triggers, no generated
//     columns, no column the extension does not know (a default to fill in),
//     and, to update or delete, READ COMMITTED (the statement's re-check of a
//     concurrently updated row, and a serializable transaction's conflict
//     tracking, are left to SPI).
// Anything else answers "not here" and the caller takes the SPI path.
//
// The table's OID, column numbers and state labels are cached per backend and
// dropped by a relcache invalidation callback (DROP/CREATE EXTENSION, ALTER
// TABLE, CREATE TRIGGER, REINDEX, VACUUM FULL, GRANT, ...); the primary key's
// OID comes from the relcache each time. Call everything inside PgCall.
#pragma once

#include "pg/pg_headers.hpp"

extern "C" {
#include "utils/rel.h"
}

namespace pgi::keys_table {

enum Column : int {
  kScope,
  kKey,
  kFingerprint,
  kState,
  kToken,
  kAttempt,
  kRecoveryPoint,
  kLockedUntil,
  kCreatedAt,
  kCompletedAt,
  kExpiresAt,
  kResponseStatus,
  kResponseHeaders,
  kResponseBody,
  kTraceContext,  // 1.2; absent in a database still at 1.0 or 1.1 (Has() is false)
  kColumns
};

enum class Access { Read, Insert, Update, Delete };

struct Opened {
  Relation rel;
  Relation primary_key;
};

// Opens the table (AccessShareLock to read, RowExclusiveLock to write) and its
// primary key when direct access of that kind is safe for this caller now. On
// false nothing is left open (a lock taken is kept to the end of the
// transaction, as the SPI statement that follows takes it anyway).
bool Open(Access access, Opened* opened);

// Closes both, keeping the locks to the end of the transaction as the
// executor does.
void Close(const Opened& opened);

// Valid after a successful Open().
AttrNumber Attnum(Column column);
bool Has(Column column);  // false only for an optional column the table lacks
Oid StateLabel(bool completed);  // pg_enum OID of 'completed' or 'in_progress'

// Whether idempotency.keys has 1.2's trace_context column, from the catalog
// (no Open() needed): for callers whose arguments do not tell the version.
bool HasTraceContextColumn();

}  // namespace pgi::keys_table
