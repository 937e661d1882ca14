// Every statement run against idempotency.keys: the SQL path. The request
// path reaches it through keys.hpp, which takes the direct path instead where
// that is safe.
//
// Each is prepared once per backend and kept (SPI_keepplan). The plan cache
// re-analyses a kept plan after DROP/CREATE EXTENSION, so the plans follow the
// new table. All names and operators are schema-qualified, so a caller's
// search_path cannot redirect them; statements run with the caller's rights,
// so privileges and row-level security apply as to any query.
//
// All functions here must run between Connect() and Disconnect(); pointers
// they return live in SPI memory until Disconnect().
#pragma once

#include "pg/args.hpp"
#include "pg/pg_headers.hpp"

namespace pgi::store {

// One row of idempotency.keys as read back. Trivially copyable.
struct KeyRow {
  bool found;
  bool completed;
  int64 token;
  int32 attempt;
  bytea* fingerprint;    // nullptr = NULL
  text* recovery_point;  // nullptr = NULL
  TimestampTz expires_at;
  bool has_locked_until;
  TimestampTz locked_until;
  bool has_response_status;
  int32 response_status;
  Datum response_headers;  // jsonb; 0 = NULL
  Datum response_body;     // bytea; 0 = NULL
  text* trace_context;     // nullptr = NULL, or not read (a database at 1.0/1.1, or not asked for)
};

// What a successful claim wrote.
struct ClaimedRow {
  bool claimed;    // false: the key is live and not ours to take
  bool timed_out;  // the row stayed locked by another transaction past row_wait_ms
  int32 attempt;
  text* recovery_point;
  TimestampTz expires_at;
  TimestampTz locked_until;
};

struct NewClaim {
  bytea* fingerprint;  // may be nullptr
  int64 token;
  TimestampTz now;
  TimestampTz expires_at;    // used when the row is new or expired
  TimestampTz locked_until;  // the lease's end
  // 1.2: the claiming request's W3C traceparent (may be nullptr), stored when
  // `traced`, i.e. when the database is at 1.2 and has the column.
  bool traced;
  text* trace_context;
};

struct Response {
  int32 status;
  bytea* body;     // may be nullptr
  Jsonb* headers;  // may be nullptr
};

void Connect();
void Disconnect();

// SPI, connected on first need within one SQL function call: the direct
// paths (direct_read.hpp, direct_write.hpp) need none. An error on the way
// leaves the connection to the transaction's abort, which ends them all.
struct Link {
  bool connected = false;
  void Need();
  void Done();
};

// The key's row whatever its state or expiry, as committed now; found =
// false when none is visible. traced: read trace_context too (the table must
// have it: a database at 1.2).
KeyRow Read(const args::KeyRef& key, bool traced = false);

// claim's and once()'s first look: the key's row under the calling
// statement's snapshot (no new snapshot), where a direct primary-key probe
// (direct_read.hpp) is not safe. traced: as for Read.
KeyRow FirstLook(const args::KeyRef& key, bool traced = false);

// What an insert of `claim` as a new key (attempt 1) wrote.
ClaimedRow Inserted(const NewClaim& claim);

// Inserts a new key. claimed = false when a row turned out to be there.
ClaimedRow Insert(const args::KeyRef& key, const NewClaim& claim);

// Inserts a key known to be absent: the key lock is held and a dirty probe
// found no row, committed or in progress (direct_read::Probe). A plain INSERT,
// without ON CONFLICT's speculative insertion (its lock, its second index
// probe and its confirmation WAL record). Every writer that creates a key
// (claim, once) holds the key lock, so none can come in between.
ClaimedRow InsertAbsent(const args::KeyRef& key, const NewClaim& claim);

// Takes the existing row: re-used afresh when expired, taken over when
// in_progress with its lease over (fingerprint permitting). claimed = false
// when the row is live and not ours to take, or gone. Waits at most
// row_wait_ms for a row another transaction has locked (only a sweep deleting
// an expired row does that without the key lock), then gives timed_out.
ClaimedRow TakeOver(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms);

// once(): as Insert and TakeOver, but the key is recorded completed in the
// same statement (no response, NULL fingerprint, NULL locked_until);
// claim.fingerprint and claim.locked_until are not used.
ClaimedRow InsertCompleted(const args::KeyRef& key, const NewClaim& claim);
ClaimedRow TakeOverCompleted(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms);

// Completes the in_progress, unexpired key held by token. False if no such row.
bool Complete(const args::KeyRef& key, int64 token, TimestampTz now, const Response& response);

// Sets recovery point and lease end of the key held by token. False if no such row.
bool Checkpoint(const args::KeyRef& key, int64 token, TimestampTz now, text* recovery_point, TimestampTz locked_until);

// Deletes the in_progress, unexpired key held by token. False if no such row.
bool Release(const args::KeyRef& key, int64 token, TimestampTz now);

// The live row as an idempotency.keys composite Datum copied into `into`; 0 if none.
Datum LookupLive(const args::KeyRef& key, TimestampTz now, MemoryContext into);

// Where a sweep looks for expired rows. The two differ only when
// idempotency.keys is distributed by Citus (see citus.hpp).
enum class SweepWhere {
  Everywhere,  // sweep(): every row of the table, through Citus when distributed
  ThisNode,    // the background sweeper: the rows stored on this node (its shards)
};

// Deletes up to limit expired rows (never a leased in_progress one) and
// returns how many. On a plain table, and per shard on a Citus node, rows
// locked by others are skipped, so the sweep never waits for a claim. Through
// Citus (Everywhere on a distributed table) the batch is chosen by primary key
// and deleted in one distributed statement. The sweep's SQL form, its text
// from sweep_sql; keys::SweepExpired takes direct_sweep's delete instead
// where that is safe.
uint64 SweepExpired(TimestampTz now, int64 limit, SweepWhere where = SweepWhere::Everywhere);

// As SweepExpired(now, limit, ThisNode), for a caller sweeping batch after
// batch: on a plain table only rows with expires_at >= *from are looked at
// (start with DT_NOBEGIN), and *from moves to the latest expiry deleted, so
// that the next batch starts where this one ended (sweep_sql::Form::LocalFrom).
// On a Citus node's shards *from is not used.
uint64 SweepExpiredFrom(TimestampTz now, int64 limit, TimestampTz* from);

}  // namespace pgi::store
