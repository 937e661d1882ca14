// Reading a key's row with a primary-key index probe instead of SPI.
//
// claim's first look, once()'s first look and lookup() are single-row reads
// by primary key. Through SPI each costs an executor start-up and shutdown as
// dear as the caller's whole statement; a direct index probe costs the probe.
// It is taken only where it returns exactly what the SPI statement would (see
// keys_table.hpp), and reads under the statement snapshot, as SPI's
// read-only execution does. Anything else answers "not here" and the caller
// takes the SPI path. Every function runs its PostgreSQL calls inside one
// PgCall.
#pragma once

#include "keys/keys_table.hpp"
#include "keys/store.hpp"
#include "pg/args.hpp"

#include "pg/pg_headers.hpp"

namespace pgi::direct_read {

// The key's visible row under `snapshot` in a slot of its own (holding its
// buffer pin; drop it with ExecDropSingleTupleTableSlot), or nullptr. Call
// inside PgCall.
TupleTableSlot* Find(const keys_table::Opened& opened, const args::KeyRef& key, Snapshot snapshot);

// The key's row under the calling statement's snapshot, as store::FirstLook's
// SPI statement reads it. Pointers in *row live in the current memory context.
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
