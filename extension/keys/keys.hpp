// The request path's one door to idempotency.keys.
//
// Each call takes the direct path (direct_read.hpp, direct_write.hpp: table
// and index calls, no SPI) where that returns exactly what the statement
// would, and otherwise the SQL statement (store.hpp), connecting SPI through
// `spi` only then. Callers never choose between the two: claim(), finish(),
// once() and the others read from here down. Call spi.Done() when finished
// with the rows (their pointers live in SPI memory until then).
#pragma once

#include "keys/direct_read.hpp"
#include "keys/store.hpp"
#include "pg/args.hpp"

#include "pg/pg_headers.hpp"

namespace pgi::keys {

using store::ClaimedRow;
using store::KeyRow;
using store::Link;
using store::NewClaim;
using store::Response;

// claim's and once()'s first look: the key's row under the calling
// statement's snapshot (no new snapshot); found = false when none is visible.
KeyRow FirstLook(const args::KeyRef& key, Link& spi, bool traced = false);

// The key's row whatever its state or expiry, as committed now.
KeyRow Read(const args::KeyRef& key, Link& spi, bool traced = false);

// Whether a row for the key exists, committed or being written by an open
// transaction (what a unique check would meet). Unknown where only the
// statement could tell; nothing is connected for it.
using direct_read::Presence;
Presence Probe(const args::KeyRef& key);

// claim(): a new key (attempt 1). Insert: claimed = false when a row turned
// out to be there. InsertAbsent: the key lock is held and Probe said Absent,
// so a plain INSERT (no ON CONFLICT) does.
ClaimedRow Insert(const args::KeyRef& key, const NewClaim& claim, Link& spi);
ClaimedRow InsertAbsent(const args::KeyRef& key, const NewClaim& claim, Link& spi);

// Takes the existing row: re-used afresh when expired, taken over when
// in_progress with its lease over (see store::TakeOver).
ClaimedRow TakeOver(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms, Link& spi);

// once(): a new key recorded completed at once. With the key lock held and no
// row seen, a probe that finds none there lets a plain insert do; else the
// statement with ON CONFLICT.
ClaimedRow InsertCompleted(const args::KeyRef& key, const NewClaim& claim, Link& spi);
// Takes over an existing row as TakeOver does, recorded completed at once. With
// claim.traced (see StoresTraceContext) it also clears the row's trace_context:
// the request it takes over from did not do the work.
ClaimedRow TakeOverCompleted(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms, Link& spi);

// Whether the table has 1.2's trace_context column, for a caller (once())
// whose arguments are the same in every version.
bool StoresTraceContext();

// finish(): stores the response when the key is in progress under token and
// live at now. False if no such row.
bool Complete(const args::KeyRef& key, int64 token, TimestampTz now, const Response& response, Link& spi);

// checkpoint() and release() of the key held by token. False if no such row.
bool Checkpoint(const args::KeyRef& key, int64 token, TimestampTz now, text* recovery_point, TimestampTz locked_until,
                Link& spi);
bool Release(const args::KeyRef& key, int64 token, TimestampTz now, Link& spi);

// lookup(): the live row as an idempotency.keys composite copied into `into`;
// 0 if none.
Datum LookupLive(const args::KeyRef& key, TimestampTz now, MemoryContext into, Link& spi);

// sweep(): deletes up to limit expired rows of the whole table (see
// store::SweepExpired) and returns how many.
uint64 SweepExpired(TimestampTz now, int64 limit, Link& spi);

// The background sweeper's batch: as store::SweepExpiredFrom (this node's
// rows, from expiry *from on).
uint64 SweepExpiredFrom(TimestampTz now, int64 limit, TimestampTz* from, Link& spi);

}  // namespace pgi::keys
