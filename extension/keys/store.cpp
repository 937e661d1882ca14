#include <array>
#include <cstddef>
#include <string>

#include "keys/store.hpp"
#include "keys/sweep_sql.hpp"

#include "keys/citus.hpp"
#include "pg/boundary.hpp"
#include "pg/bounded_wait.hpp"
#include "pg/pg_headers.hpp"

namespace pgi::store {
namespace {

// SQL text. Operators are spelled OPERATOR(pg_catalog.x) because an unqualified
// operator is looked up through the caller's search_path.
#define EQ " OPERATOR(pg_catalog.=) "
#define LE " OPERATOR(pg_catalog.<=) "
#define GT " OPERATOR(pg_catalog.>) "
#define KEY_IS " k.scope" EQ "$1 AND k.key" EQ "$2 "
#define IN_PROGRESS "'in_progress'::idempotency.state"
#define COMPLETED "'completed'::idempotency.state"

// The statements that exist with and without trace_context (1.2).
#define READ_COLUMNS                                                                                  \
  "SELECT k.fingerprint, k.state" EQ COMPLETED ", k.token, k.attempt, k.recovery_point, k.expires_at," \
  " k.locked_until, k.response_status, k.response_headers, k.response_body"
#define READ_FROM " FROM idempotency.keys AS k WHERE" KEY_IS
#define INSERT_COLUMNS                                                                            \
  "INSERT INTO idempotency.keys AS k (scope, key, fingerprint, state, token, attempt, recovery_point," \
  " locked_until, created_at, completed_at, expires_at, response_status, response_headers, response_body"
#define INSERT_VALUES " VALUES ($1, $2, $3, " IN_PROGRESS ", $4, 1, NULL, $7, $5, NULL, $6, NULL, NULL, NULL"
#define INSERT_RETURNING                    \
  " ON CONFLICT (scope, key) DO NOTHING" \
  " RETURNING k.attempt, k.recovery_point, k.expires_at, k.locked_until"
#define TAKEOVER_SET                                                                                  \
  "UPDATE idempotency.keys AS k SET"                                                                  \
  "  fingerprint = CASE WHEN k.expires_at" LE "$5 THEN $3 ELSE COALESCE(k.fingerprint, $3) END,"     \
  "  state = " IN_PROGRESS ", token = $4,"                                                            \
  "  attempt = CASE WHEN k.expires_at" LE "$5 THEN 1 ELSE k.attempt OPERATOR(pg_catalog.+) 1 END,"   \
  "  recovery_point = CASE WHEN k.expires_at" LE "$5 THEN NULL ELSE k.recovery_point END,"           \
  "  locked_until = $7,"                                                                              \
  "  created_at = CASE WHEN k.expires_at" LE "$5 THEN $5 ELSE k.created_at END,"                     \
  "  completed_at = NULL,"                                                                            \
  "  expires_at = CASE WHEN k.expires_at" LE "$5 THEN $6 ELSE k.expires_at END,"                     \
  "  response_status = NULL, response_headers = NULL, response_body = NULL"
#define TAKEOVER_WHERE                                                      \
  " WHERE" KEY_IS "AND (k.expires_at" LE "$5"                               \
  "    OR (k.state" EQ IN_PROGRESS " AND k.locked_until" LE "$5"           \
  "        AND (k.fingerprint IS NULL OR $3 IS NULL OR k.fingerprint" EQ "$3)))" \
  " RETURNING k.attempt, k.recovery_point, k.expires_at, k.locked_until"
#define TAKEOVER_COMPLETED_SET                                                                       \
  "UPDATE idempotency.keys AS k SET"                                                                  \
  "  fingerprint = NULL, state = " COMPLETED ", token = $4,"                                          \
  "  attempt = CASE WHEN k.expires_at" LE "$5 THEN 1 ELSE k.attempt OPERATOR(pg_catalog.+) 1 END,"   \
  "  recovery_point = CASE WHEN k.expires_at" LE "$5 THEN NULL ELSE k.recovery_point END,"           \
  "  locked_until = NULL,"                                                                            \
  "  created_at = CASE WHEN k.expires_at" LE "$5 THEN $5 ELSE k.created_at END,"                     \
  "  completed_at = $5,"                                                                              \
  "  expires_at = CASE WHEN k.expires_at" LE "$5 THEN $6 ELSE k.expires_at END,"                     \
  "  response_status = NULL, response_headers = NULL, response_body = NULL"
#define TAKEOVER_COMPLETED_WHERE                           \
  " WHERE" KEY_IS "AND (k.expires_at" LE "$5"              \
  "    OR (k.state" EQ IN_PROGRESS " AND k.locked_until" LE "$5))" \
  " RETURNING k.attempt, k.recovery_point, k.expires_at, k.locked_until"
#define CLAIM_TYPES TEXTOID, TEXTOID, BYTEAOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID

enum class Statement : std::size_t {
  Read,
  Insert,
  TakeOver,
  Complete,
  Checkpoint,
  Release,
  Lookup,
  InsertCompleted,
  TakeOverCompleted,
  InsertAbsent,
  LockRowSkipLocked,
  RowExists,
  // 1.2: as Read, Insert, TakeOver and InsertAbsent, with trace_context
  // ($8 when writing). Only for a database at 1.2: before, the column is not there.
  ReadTraced,
  InsertTraced,
  TakeOverTraced,
  InsertAbsentTraced,
  TakeOverCompletedTraced,
  kCount
};

struct StatementText {
  const char* sql;
  int nargs;
  std::array<Oid, 8> argtypes;
};

const StatementText kStatements[] = {
    // Read
    {READ_COLUMNS READ_FROM,
     2,
     {TEXTOID, TEXTOID}},
    // Insert: $3 fingerprint, $4 token, $5 now, $6 expires_at, $7 locked_until.
    // A new key: the common case, so a plain insert whose executor start-up
    // is cheap. DO NOTHING answers a conflict without a row lock or an xid.
    {INSERT_COLUMNS ")" INSERT_VALUES ")" INSERT_RETURNING, 7, {CLAIM_TYPES}},
    // TakeOver: same parameters. Re-uses an expired row as a fresh claim, or
    // takes over an in_progress row whose lease is over (fingerprint
    // permitting) keeping attempt + 1, the recovery point and the expiry.
    {TAKEOVER_SET TAKEOVER_WHERE, 7, {CLAIM_TYPES}},
    // Complete: $3 token, $4 now, $5 status, $6 body, $7 headers. Touches no
    // indexed column, so it is a HOT update.
    {"UPDATE idempotency.keys AS k SET state = " COMPLETED ", completed_at = $4, locked_until = NULL,"
     " response_status = $5, response_body = $6, response_headers = $7"
     " WHERE" KEY_IS "AND k.token" EQ "$3 AND k.state" EQ IN_PROGRESS " AND k.expires_at" GT "$4",
     7,
     {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, INT4OID, BYTEAOID, JSONBOID}},
    // Checkpoint: $3 token, $4 now, $5 recovery point, $6 locked_until
    // A NULL recovery point renews the lease and keeps the last one.
    {"UPDATE idempotency.keys AS k SET recovery_point = COALESCE($5, k.recovery_point), locked_until = $6"
     " WHERE" KEY_IS "AND k.token" EQ "$3 AND k.state" EQ IN_PROGRESS " AND k.expires_at" GT "$4",
     6,
     {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TIMESTAMPTZOID}},
    // Release: $3 token, $4 now
    {"DELETE FROM idempotency.keys AS k"
     " WHERE" KEY_IS "AND k.token" EQ "$3 AND k.state" EQ IN_PROGRESS " AND k.expires_at" GT "$4",
     4,
     {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID}},
    // Lookup: $3 now
    {"SELECT k FROM idempotency.keys AS k WHERE" KEY_IS "AND k.expires_at" GT "$3",
     3,
     {TEXTOID, TEXTOID, TIMESTAMPTZOID}},
    // InsertCompleted (once()): Insert's parameters, but the key is recorded
    // completed at once: no response, no fingerprint, no lease ($3 and $7
    // unused).
    {"INSERT INTO idempotency.keys AS k (scope, key, fingerprint, state, token, attempt, recovery_point,"
     " locked_until, created_at, completed_at, expires_at, response_status, response_headers, response_body)"
     " VALUES ($1, $2, NULL, " COMPLETED ", $4, 1, NULL, NULL, $5, $5, $6, NULL, NULL, NULL)"
     " ON CONFLICT (scope, key) DO NOTHING"
     " RETURNING k.attempt, k.recovery_point, k.expires_at, k.locked_until",
     7,
     {TEXTOID, TEXTOID, BYTEAOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID}},
    // TakeOverCompleted (once()): the rows TakeOver takes (expired, or
    // in_progress with the lease over; once() has no fingerprint to differ),
    // recorded completed at once like InsertCompleted.
    {TAKEOVER_COMPLETED_SET TAKEOVER_COMPLETED_WHERE, 7, {CLAIM_TYPES}},
    // InsertAbsent: Insert's parameters; the key is known to be absent (see
    // store.hpp), so no ON CONFLICT clause, and no RETURNING: what it wrote
    // is what it was given (a RETURNING list costs a projection and a result
    // tuple per key).
    {INSERT_COLUMNS ")" INSERT_VALUES ")", 7, {CLAIM_TYPES}},
    // LockRowSkipLocked and RowExists: before a takeover on a Citus table,
    // whose row waits happen on a worker where the caller's lock_timeout does
    // not reach (see QuietRowLock).
    {"SELECT 1 FROM idempotency.keys AS k WHERE" KEY_IS "FOR UPDATE SKIP LOCKED", 2, {TEXTOID, TEXTOID}},
    {"SELECT 1 FROM idempotency.keys AS k WHERE" KEY_IS, 2, {TEXTOID, TEXTOID}},
    // ReadTraced
    {READ_COLUMNS ", k.trace_context" READ_FROM, 2, {TEXTOID, TEXTOID}},
    // InsertTraced: Insert's parameters, $8 trace_context
    {INSERT_COLUMNS ", trace_context)" INSERT_VALUES ", $8)" INSERT_RETURNING, 8, {CLAIM_TYPES, TEXTOID}},
    // TakeOverTraced: a takeover is a new claim, so the new claimer's context replaces the old one
    {TAKEOVER_SET ", trace_context = $8" TAKEOVER_WHERE, 8, {CLAIM_TYPES, TEXTOID}},
    // InsertAbsentTraced
    {INSERT_COLUMNS ", trace_context)" INSERT_VALUES ", $8)", 8, {CLAIM_TYPES, TEXTOID}},
    // TakeOverCompletedTraced (once() on a database at 1.2): once() is a new
    // claim too, by a caller with no context to give, so the context of the
    // request it takes over from (expired, or lease over) is cleared: a link
    // must never point at a request that did not do the work.
    {TAKEOVER_COMPLETED_SET ", trace_context = NULL" TAKEOVER_COMPLETED_WHERE, 7, {CLAIM_TYPES}},
};
static_assert(sizeof kStatements / sizeof kStatements[0] == static_cast<std::size_t>(Statement::kCount));

SPIPlanPtr plans[static_cast<std::size_t>(Statement::kCount)] = {};

// Prepares sql and keeps the plan for the backend's life. Call only inside PgCall.
SPIPlanPtr KeptPlan(const char* sql, int nargs, Oid* argtypes) {
  SPIPlanPtr plan = SPI_prepare(sql, nargs, argtypes);
  if (plan == nullptr) elog(ERROR, "pg_idempotency: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
  if (SPI_keepplan(plan) != 0) elog(ERROR, "pg_idempotency: SPI_keepplan failed");
  return plan;
}

// Runs a statement; returns SPI's result code. Call only inside PgCall.
// Snapshot: Fresh takes a new snapshot (what a READ COMMITTED statement sees
// now), Statement reads under the calling statement's snapshot, cheaper and
// enough for a read-only look.
enum class Snapshot { Fresh, Statement };

int Execute(Statement which, Datum* values, const char* nulls, long max_rows, Snapshot snapshot = Snapshot::Fresh) {
  const auto index = static_cast<std::size_t>(which);
  if (plans[index] == nullptr) {
    const StatementText& text = kStatements[index];
    plans[index] = KeptPlan(text.sql, text.nargs, const_cast<Oid*>(text.argtypes.data()));
  }
  const int rc = SPI_execute_plan(plans[index], values, nulls, snapshot == Snapshot::Statement, max_rows);
  if (rc < 0) elog(ERROR, "pg_idempotency: statement failed: %s", SPI_result_code_string(rc));
  return rc;
}

Datum GetColumn(int column, bool* isnull) {
  return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull);
}

char NullFlag(const void* p) { return p == nullptr ? 'n' : ' '; }

}  // namespace

void Connect() {
  PgCall([] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "pg_idempotency: SPI_connect failed");
  });
}

void Disconnect() {
  PgCall([] { SPI_finish(); });
}

void Link::Need() {
  if (!connected) Connect();
  connected = true;
}

void Link::Done() {
  if (connected) Disconnect();
  connected = false;
}

namespace {

KeyRow ReadBy(const args::KeyRef& key, Snapshot snapshot, bool traced) {
  return PgCall([&] {
    KeyRow row{};
    Datum values[] = {PointerGetDatum(key.scope), PointerGetDatum(key.key)};
    Execute(traced ? Statement::ReadTraced : Statement::Read, values, nullptr, 1, snapshot);
    if (SPI_processed == 0) return row;
    bool isnull = false;
    row.found = true;
    Datum d = GetColumn(1, &isnull);
    row.fingerprint = isnull ? nullptr : DatumGetByteaPP(d);
    row.completed = DatumGetBool(GetColumn(2, &isnull));
    row.token = DatumGetInt64(GetColumn(3, &isnull));
    row.attempt = DatumGetInt32(GetColumn(4, &isnull));
    d = GetColumn(5, &isnull);
    row.recovery_point = isnull ? nullptr : DatumGetTextPP(d);
    row.expires_at = DatumGetTimestampTz(GetColumn(6, &isnull));
    d = GetColumn(7, &isnull);
    row.has_locked_until = !isnull;
    row.locked_until = isnull ? 0 : DatumGetTimestampTz(d);
    d = GetColumn(8, &isnull);
    row.has_response_status = !isnull;
    row.response_status = isnull ? 0 : DatumGetInt32(d);
    d = GetColumn(9, &isnull);
    row.response_headers = isnull ? 0 : d;
    d = GetColumn(10, &isnull);
    row.response_body = isnull ? 0 : d;
    if (traced) {
      d = GetColumn(11, &isnull);
      row.trace_context = isnull ? nullptr : DatumGetTextPP(d);
    }
    return row;
  });
}

}  // namespace

KeyRow Read(const args::KeyRef& key, bool traced) { return ReadBy(key, Snapshot::Fresh, traced); }

KeyRow FirstLook(const args::KeyRef& key, bool traced) { return ReadBy(key, Snapshot::Statement, traced); }

ClaimedRow Inserted(const NewClaim& claim) { return {true, false, 1, nullptr, claim.expires_at, claim.locked_until}; }

namespace {

// What QuietRowLock found.
enum class RowLock {
  Locked,  // the row is ours (FOR UPDATE) until the transaction ends
  Gone,    // no committed row for the key any more (released, swept)
  Held,    // still locked by another transaction when the wait ran out
};

// Locks the key's row on a Citus table without ever waiting on the worker
// and without raising: a waiter that polled with FOR UPDATE NOWAIT wrote an
// ERROR and a STATEMENT line to the worker's log on every try. Each try is
// FOR UPDATE SKIP LOCKED; when it returns nothing, a plain read tells a row
// another transaction holds (there: try again) from no row at all (Gone).
// Both run under a fresh snapshot, so between them the row may change hands:
//   - the holder committed and let go: the read sees the row, the next try
//     locks it (one pause later);
//   - the holder deleted it (release, a sweeper): Gone, and the caller reads
//     again and claims the key as new; a row another node inserts meanwhile
//     is met by that insert's ON CONFLICT (see docs/citus.md on entering
//     through a worker);
//   - deleted and inserted again, committed: the read sees the new row and
//     the next try locks that one; the takeover's WHERE then judges the row
//     as it is (a live key is not taken).
// No statement here waits for a row lock, so the wait ends when wait_ms says,
// whatever the worker's lock_timeout. Call only inside PgCall.
RowLock QuietRowLock(Datum* values, int wait_ms) {
  RowLock found = RowLock::Held;
  (void)bounded_wait::Poll(wait_ms, [&] {
    Execute(Statement::LockRowSkipLocked, values, nullptr, 1);
    if (SPI_processed > 0) {
      found = RowLock::Locked;
      return true;
    }
    Execute(Statement::RowExists, values, nullptr, 1);
    if (SPI_processed == 0) {
      found = RowLock::Gone;
      return true;
    }
    return false;
  });
  return found;
}

// Runs Insert or TakeOver and reads back what it wrote.
ClaimedRow WriteClaim(Statement which, const args::KeyRef& key, const NewClaim& claim, int row_wait_ms) {
  return PgCall([&] {
    ClaimedRow result{};
    Datum values[] = {PointerGetDatum(key.scope),
                      PointerGetDatum(key.key),
                      PointerGetDatum(claim.fingerprint),
                      Int64GetDatum(claim.token),
                      TimestampTzGetDatum(claim.now),
                      TimestampTzGetDatum(claim.expires_at),
                      TimestampTzGetDatum(claim.locked_until),
                      PointerGetDatum(claim.trace_context)};
    const char nulls[] = {' ', ' ', NullFlag(claim.fingerprint), ' ', ' ', ' ', ' ', NullFlag(claim.trace_context),
                          '\0'};
    auto execute = [&] { Execute(which, values, nulls, 1); };
    if (row_wait_ms < 0) {
      execute();
    } else if (!citus::IsCitusTable(citus::KeysTable())) {
      if (!bounded_wait::Run(row_wait_ms, execute)) {
        result.timed_out = true;
        return result;
      }
    } else {
      // On a Citus table the row lives on a worker, where lock_timeout set
      // here does not reach: lock the row quietly first, then the statement
      // cannot wait.
      switch (QuietRowLock(values, row_wait_ms)) {
        case RowLock::Locked:
          execute();
          break;
        case RowLock::Gone:
          return result;  // not claimed: the caller reads again
        case RowLock::Held:
          result.timed_out = true;
          return result;
      }
    }
    if (SPI_processed == 0) return result;
    result.claimed = true;
    if (which == Statement::InsertAbsent || which == Statement::InsertAbsentTraced)
      return Inserted(claim);  // no RETURNING: the row as given
    bool isnull = false;
    result.attempt = DatumGetInt32(GetColumn(1, &isnull));
    Datum d = GetColumn(2, &isnull);
    result.recovery_point = isnull ? nullptr : DatumGetTextPP(d);
    result.expires_at = DatumGetTimestampTz(GetColumn(3, &isnull));
    result.locked_until = DatumGetTimestampTz(GetColumn(4, &isnull));
    return result;
  });
}

}  // namespace

ClaimedRow Insert(const args::KeyRef& key, const NewClaim& claim) {
  return WriteClaim(claim.traced ? Statement::InsertTraced : Statement::Insert, key, claim, -1);
}

ClaimedRow InsertAbsent(const args::KeyRef& key, const NewClaim& claim) {
  return WriteClaim(claim.traced ? Statement::InsertAbsentTraced : Statement::InsertAbsent, key, claim, -1);
}

ClaimedRow TakeOver(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms) {
  return WriteClaim(claim.traced ? Statement::TakeOverTraced : Statement::TakeOver, key, claim, row_wait_ms);
}

ClaimedRow InsertCompleted(const args::KeyRef& key, const NewClaim& claim) {
  return WriteClaim(Statement::InsertCompleted, key, claim, -1);
}

ClaimedRow TakeOverCompleted(const args::KeyRef& key, const NewClaim& claim, int row_wait_ms) {
  return WriteClaim(claim.traced ? Statement::TakeOverCompletedTraced : Statement::TakeOverCompleted, key, claim,
                    row_wait_ms);
}

bool Complete(const args::KeyRef& key, int64 token, TimestampTz now, const Response& response) {
  return PgCall([&] {
    Datum values[] = {PointerGetDatum(key.scope),       PointerGetDatum(key.key),       Int64GetDatum(token),
                      TimestampTzGetDatum(now),         Int32GetDatum(response.status), PointerGetDatum(response.body),
                      PointerGetDatum(response.headers)};
    const char nulls[] = {' ', ' ', ' ', ' ', ' ', NullFlag(response.body), NullFlag(response.headers), '\0'};
    Execute(Statement::Complete, values, nulls, 0);
    return SPI_processed > 0;
  });
}

bool Checkpoint(const args::KeyRef& key, int64 token, TimestampTz now, text* recovery_point, TimestampTz locked_until) {
  return PgCall([&] {
    Datum values[] = {PointerGetDatum(key.scope), PointerGetDatum(key.key),        Int64GetDatum(token),
                      TimestampTzGetDatum(now),   PointerGetDatum(recovery_point), TimestampTzGetDatum(locked_until)};
    const char nulls[] = {' ', ' ', ' ', ' ', NullFlag(recovery_point), ' ', '\0'};
    Execute(Statement::Checkpoint, values, nulls, 0);
    return SPI_processed > 0;
  });
}

bool Release(const args::KeyRef& key, int64 token, TimestampTz now) {
  return PgCall([&] {
    Datum values[] = {PointerGetDatum(key.scope), PointerGetDatum(key.key), Int64GetDatum(token),
                      TimestampTzGetDatum(now)};
    Execute(Statement::Release, values, nullptr, 0);
    return SPI_processed > 0;
  });
}

Datum LookupLive(const args::KeyRef& key, TimestampTz now, MemoryContext into) {
  return PgCall([&] {
    Datum values[] = {PointerGetDatum(key.scope), PointerGetDatum(key.key), TimestampTzGetDatum(now)};
    Execute(Statement::Lookup, values, nullptr, 1, Snapshot::Statement);  // lookup() is STABLE
    if (SPI_processed == 0) return Datum(0);
    bool isnull = false;
    Datum row = GetColumn(1, &isnull);
    MemoryContext previous = MemoryContextSwitchTo(into);
    Datum copy = PointerGetDatum(DatumGetHeapTupleHeaderCopy(row));  // flattens any TOAST pointers
    MemoryContextSwitchTo(previous);
    return copy;
  });
}

namespace {

// Kept plans of the sweep (Local on idempotency.keys, Distributed); a shard's
// statement names the shard and is planned each time.
SPIPlanPtr sweep_plans[2] = {};

// Runs one sweep statement; returns how many rows it deleted. Call only inside PgCall.
uint64 RunSweep(const char* sql, SPIPlanPtr* keep, TimestampTz now, int64 limit) {
  Oid argtypes[] = {TIMESTAMPTZOID, INT8OID};
  Datum values[] = {TimestampTzGetDatum(now), Int64GetDatum(limit)};
  int rc;
  if (keep == nullptr) {
    rc = SPI_execute_with_args(sql, 2, argtypes, values, nullptr, false, 0);
  } else {
    if (*keep == nullptr) *keep = KeptPlan(sql, 2, argtypes);
    rc = SPI_execute_plan(*keep, values, nullptr, false, 0);
  }
  if (rc < 0) elog(ERROR, "pg_idempotency: sweep failed: %s", SPI_result_code_string(rc));
  return static_cast<uint64>(SPI_processed);
}

// Kept plan of the LocalFrom sweep on idempotency.keys.
SPIPlanPtr sweep_from_plan = nullptr;

// Runs the LocalFrom statement; returns how many rows it deleted and moves
// *from to the latest expiry among them. Call only inside PgCall.
uint64 RunSweepFrom(TimestampTz now, int64 limit, TimestampTz* from) {
  Oid argtypes[] = {TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID};
  Datum values[] = {TimestampTzGetDatum(now), Int64GetDatum(limit), TimestampTzGetDatum(*from)};
  if (sweep_from_plan == nullptr) {
    const std::string sql = sweep_sql::Statement(sweep_sql::Form::LocalFrom, sweep_sql::kKeysTable);
    sweep_from_plan = KeptPlan(sql.c_str(), 3, argtypes);
  }
  const int rc = SPI_execute_plan(sweep_from_plan, values, nullptr, false, 0);
  if (rc != SPI_OK_SELECT || SPI_processed != 1)
    elog(ERROR, "pg_idempotency: sweep failed: %s", SPI_result_code_string(rc));
  bool isnull = false;
  const int64 deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  const Datum latest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
  if (!isnull) *from = DatumGetTimestampTz(latest);
  return static_cast<uint64>(deleted);
}

// Whether idempotency.keys is distributed by Citus.
bool KeysDistributed() {
  return PgCall([] {
    const Oid keys = citus::KeysTable();
    return OidIsValid(keys) && citus::IsCitusTable(keys);
  });
}

}  // namespace

uint64 SweepExpiredFrom(TimestampTz now, int64 limit, TimestampTz* from) {
  if (KeysDistributed()) return SweepExpired(now, limit, SweepWhere::ThisNode);
  return PgCall([&] { return RunSweepFrom(now, limit, from); });
}

uint64 SweepExpired(TimestampTz now, int64 limit, SweepWhere where) {
  if (!KeysDistributed()) {
    const std::string sql = sweep_sql::Statement(sweep_sql::Form::Local, sweep_sql::kKeysTable);
    return PgCall([&] { return RunSweep(sql.c_str(), &sweep_plans[0], now, limit); });
  }
  if (where == SweepWhere::Everywhere) {
    const std::string sql = sweep_sql::Statement(sweep_sql::Form::Distributed, sweep_sql::kKeysTable);
    return PgCall([&] { return RunSweep(sql.c_str(), &sweep_plans[1], now, limit); });
  }
  // This node's shards in turn, one plain table each, until limit rows are
  // gone: a short count still means "nothing more here" to the caller.
  List* shards = PgCall([] { return citus::LocalShards(); });
  uint64 deleted = 0;
  for (int i = 0; i < list_length(shards) && deleted < static_cast<uint64>(limit); i++) {
    const std::string sql = sweep_sql::Statement(sweep_sql::Form::Local, static_cast<const char*>(list_nth(shards, i)));
    const int64 left = limit - static_cast<int64>(deleted);
    deleted += PgCall([&] { return RunSweep(sql.c_str(), nullptr, now, left); });
  }
  return deleted;
}

}  // namespace pgi::store
