// Reading a key's row with a primary-key index probe instead of SPI.
//
// claim's first look, once()'s first look and lookup() are single-row reads
// by primary key. Through SPI each costs an executor start-up and shutdown as
// dear as the caller's whole statement; a direct index probe costs the probe.
// It is taken only where it returns exactly what the SPI statement would:
//   - idempotency.keys is a plain local heap table (not partitioned, no
//     inheritance children, heap access method) with its valid primary key on
//     (scope, key) in the default text btree operator family;
//   - Citus is not loaded (on a coordinator the table is an empty shell whose
//     rows live in shards: a probe would miss every key);
//   - the caller has SELECT on the table (otherwise the SPI statement raises
//     42501 as before, or honours column privileges);
//   - row-level security does not apply to the caller (otherwise the SPI
//     statement applies the policies, or raises as row_security = off does);
//   - a statement snapshot is active (the probe reads under it, as SPI's
//     read-only execution does).
// Anything else answers "not here" and the caller takes the SPI path.
//
// The table's OID and column numbers are cached per backend and dropped by a
// relcache invalidation callback (DROP/CREATE EXTENSION, ALTER TABLE, REINDEX,
// VACUUM FULL, GRANT, ...); the primary key's OID comes from the relcache each
// time. Every function runs its PostgreSQL calls inside one PgCall.
#pragma once

#include "args.hpp"
#include "store.hpp"

#include "pg_headers.hpp"

namespace pgi::direct_read {

// The key's row under the calling statement's snapshot, as store::Read with
// statement_snapshot. Pointers in *row live in the current memory context.
// False: not safe here, *row untouched; use the SPI statement.
bool Read(const args::KeyRef& key, store::KeyRow* row);

// Whether a row for the key exists that is committed or being written by an
// open transaction (a dirty snapshot: what a unique check would meet).
enum class Presence { Absent, Present, Unknown };  // Unknown: not safe here
Presence Probe(const args::KeyRef& key);

// lookup(): the live row (expires_at > now) as an idempotency.keys composite
// copied into `into`, or 0 in *row when there is none. False: not safe here.
bool LookupLive(const args::KeyRef& key, TimestampTz now, MemoryContext into, Datum* row);

}  // namespace pgi::direct_read
