// The sweeper launcher: one static background worker, connected to no
// database, that hands a pool of at most idempotency.max_sweepers workers to
// the databases, one turn at a time. Which database goes next is decided by
// sweep_schedule.cpp; see sweeper.cpp for the whole design.
//
// Runs only PostgreSQL calls and plain structs: an error here is promoted to
// FATAL (there is no PG_TRY frame), the launcher exits and the postmaster
// starts it again after bgw_restart_time; no C++ object is ever skipped.
#include <cstring>

#include "pg/settings.hpp"
#include "sweeper/sweep_schedule.hpp"
#include "sweeper/sweeper_shared.hpp"
#include "pg/pg_compat.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PGDLLEXPORT void pg_idempotency_launcher_main(Datum main_arg);
}

namespace pgi::sweeper {
namespace {

namespace sched = schedule;

// pg_database is read again at least this often (and at once when woken):
// a database created from a template that has the extension is found then.
constexpr int64 kMaxRefreshUs = 10 * USECS_PER_SEC;
// Databases found without the extension are probed again this often (a
// safety net: CREATE EXTENSION wakes the launcher by itself).
constexpr int64 kReprobeUs = 10 * 60 * USECS_PER_SEC;
// A turn that failed (error, terminated, database held) is retried after
// min(sweep_interval, this).
constexpr int64 kRetryUs = 1 * USECS_PER_SEC;
// No free slot: retry after a pause that doubles up to this, and say so in
// the log at most once a minute.
constexpr int64 kMinBackoffUs = 100 * 1000;
constexpr int64 kMaxBackoffUs = 10 * USECS_PER_SEC;
constexpr int64 kNoSlotLogUs = 60 * USECS_PER_SEC;
constexpr int kMaxPool = 64;  // the upper bound of idempotency.max_sweepers

// What the launcher knows of each database, in two parallel arrays: the
// schedule's view and the rest.
sched::Database dbs[kMaxDatabases];
struct DbInfo {
  Oid dboid;
  TimestampTz retry_at;
  bool seen;
};
DbInfo info[kMaxDatabases];
int db_count = 0;

struct Worker {
  BackgroundWorkerHandle* handle;  // in TopMemoryContext
  Oid dboid;
  pid_t pid;  // once known
};
Worker pool[kMaxPool];
int pool_size = 0;

bool warned_full = false;
TimestampTz next_refresh = 0;
TimestampTz next_reprobe = 0;
TimestampTz no_slot_until = 0;  // backing off until then
int64 backoff_us = kMinBackoffUs;
TimestampTz no_slot_logged = 0;
int no_slot_skipped = 0;

int64 IntervalUs() { return static_cast<int64>(settings::SweepIntervalMs()) * 1000; }

// On exit, the workers go too: a launcher started again has no handles for
// them and starts its own.
void Detach(int, Datum) {
  for (int i = 0; i < pool_size; i++) TerminateBackgroundWorker(pool[i].handle);
  SharedState* state = Shared();
  SpinLockAcquire(&state->mutex);
  if (state->launcher_latch == MyLatch) state->launcher_latch = nullptr;
  state->waiting = 0;
  SpinLockRelease(&state->mutex);
}

// The databases a sweeper may connect to, read from the shared catalog.
int ListDatabases(Oid* out, int capacity) {
  int count = 0;
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  (void)GetTransactionSnapshot();
  Relation rel = table_open(DatabaseRelationId, AccessShareLock);
  TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
  HeapTuple tuple;
  while ((tuple = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
    auto* db = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
    if (!db->datallowconn || db->datistemplate) continue;
#ifdef DATCONNLIMIT_INVALID_DB  // 15.4 and later: half-dropped databases
    if (database_is_invalid_form(db)) continue;
#endif
    if (count < capacity) {
      out[count++] = db->oid;
    } else if (!warned_full) {
      warned_full = true;
      ereport(WARNING, (errmsg("pg_idempotency launcher: more than %d databases, some are not swept", capacity)));
    }
  }
  table_endscan(scan);
  table_close(rel, AccessShareLock);
  CommitTransactionCommand();
  return count;
}

int FindLocal(Oid dboid) {
  for (int i = 0; i < db_count; i++)
    if (info[i].dboid == dboid) return i;
  return -1;
}

// Follows pg_database: adds new databases, forgets dropped ones (here and in
// shared memory, so that creating and dropping databases never fills it).
void RefreshDatabases() {
  SharedState* state = Shared();
  static Oid found[kMaxDatabases];
  const int found_count = ListDatabases(found, kMaxDatabases);
  qsort(found, found_count, sizeof(Oid), oid_cmp);
  for (DatabaseEntry& entry : state->databases) {
    SpinLockAcquire(&state->mutex);
    const Oid dboid = entry.pid == 0 ? entry.dboid : InvalidOid;
    SpinLockRelease(&state->mutex);
    if (dboid == InvalidOid || bsearch(&dboid, found, found_count, sizeof(Oid), oid_cmp) != nullptr) continue;
    SpinLockAcquire(&state->mutex);
    if (entry.dboid == dboid && entry.pid == 0) entry.dboid = InvalidOid;
    SpinLockRelease(&state->mutex);
  }
  for (int i = 0; i < db_count; i++) info[i].seen = false;
  for (int i = 0; i < found_count; i++) {
    if (const int at = FindLocal(found[i]); at >= 0) {
      info[at].seen = true;
    } else if (db_count < kMaxDatabases) {
      dbs[db_count] = sched::Database{};
      info[db_count++] = DbInfo{found[i], 0, true};
    }
  }
  for (int i = 0; i < db_count;) {
    // A running worker keeps its database listed until it has ended.
    if (info[i].seen || dbs[i].running) {
      i++;
      continue;
    }
    dbs[i] = dbs[db_count - 1];
    info[i] = info[--db_count];
  }
}

// Databases where CREATE EXTENSION committed, and the periodic re-probe.
// Returns whether anything was queued.
bool TakeWakeups(TimestampTz now) {
  SharedState* state = Shared();
  Oid wake[kMaxWakeups];
  SpinLockAcquire(&state->mutex);
  const int wake_count = state->wakeups;
  const bool overflow = state->wake_overflow;
  std::memcpy(wake, state->wake, sizeof(Oid) * wake_count);
  state->wakeups = 0;
  state->wake_overflow = false;
  SpinLockRelease(&state->mutex);
  if (wake_count > 0 || overflow) RefreshDatabases();  // the database may be new to us
  for (int w = 0; w < wake_count; w++)
    if (const int at = FindLocal(wake[w]); at >= 0) {
      // A database known to have the extension keeps its rhythm (CREATE
      // EXTENSION IF NOT EXISTS there is no news), unless a turn is running
      // there now: it may have seen a DROP EXTENSION just before this CREATE.
      if (dbs[at].known != sched::Known::Present || dbs[at].running) dbs[at].woken = true;
    }
  const bool reprobe = now >= next_reprobe;
  if (reprobe) next_reprobe = now + kReprobeUs;
  // Lost wakeups count as news; the periodic re-probe does not jump the
  // queue (its databases wait their turn like the others).
  for (int i = 0; i < db_count; i++) {
    if (dbs[i].known != sched::Known::Absent) continue;
    if (overflow) dbs[i].woken = true;
    if (reprobe) dbs[i].known = sched::Known::Unknown;
  }
  return wake_count > 0 || overflow;
}

// Workers that have ended: what their turn found decides when their
// database is next due.
void ReapWorkers(TimestampTz now) {
  SharedState* state = Shared();
  for (int w = 0; w < pool_size;) {
    pid_t pid = 0;
    const BgwHandleStatus status = GetBackgroundWorkerPid(pool[w].handle, &pid);
    if (status == BGWH_STARTED) pool[w].pid = pid;
    if (status != BGWH_STOPPED && status != BGWH_POSTMASTER_DIED) {
      w++;
      continue;
    }
    DatabaseEntry outcome{};
    SpinLockAcquire(&state->mutex);
    if (const DatabaseEntry* entry = FindDatabaseLocked(state, pool[w].dboid, false); entry != nullptr)
      outcome = *entry;
    SpinLockRelease(&state->mutex);
    if (const int at = FindLocal(pool[w].dboid); at >= 0) {
      sched::Database& db = dbs[at];
      db.running = false;
      if (!outcome.turn_done) {
        // Failed, terminated or not started (database held): try again soon.
        info[at].retry_at = now + Min(IntervalUs(), kRetryUs);
      } else if (outcome.has_extension) {
        db.known = sched::Known::Present;
        db.backlog = outcome.more_left;
        db.woken = false;
        info[at].retry_at = 0;
      } else {
        // A probe that ran before a CREATE EXTENSION committed is not the last
        // word: woken (set since the launch) sends a worker again.
        db.known = sched::Known::Absent;
        db.backlog = false;
        info[at].retry_at = 0;
      }
    }
    pfree(pool[w].handle);
    pool[w] = pool[--pool_size];
  }
}

// Holds for commands that need a database free of sessions, and retries.
void ApplyHolds(TimestampTz now) {
  SharedState* state = Shared();
  static Oid held[kMaxDatabases];
  static TimestampTz until[kMaxDatabases];
  int held_count = 0;
  SpinLockAcquire(&state->mutex);
  for (const DatabaseEntry& entry : state->databases) {
    if (entry.dboid != InvalidOid && entry.hold_until > now) {
      held[held_count] = entry.dboid;
      until[held_count++] = entry.hold_until;
    }
  }
  SpinLockRelease(&state->mutex);
  for (int i = 0; i < db_count; i++) dbs[i].not_before = info[i].retry_at;
  for (int h = 0; h < held_count; h++)
    if (const int at = FindLocal(held[h]); at >= 0) dbs[at].not_before = Max(dbs[at].not_before, until[h]);
}

// Free background-worker slots as far as this process can tell: every
// background worker that has started shows in the backend status array
// (ours too); ours that have not yet started count as taken.
int FreeSlots() {
  pgstat_clear_backend_activity_snapshot();
  int used = 0;
  const int backends = pgstat_fetch_stat_numbackends();
  for (int i = 1; i <= backends; i++) {
    const LocalPgBackendStatus* local = compat::LocalBackendStatus(i);
    if (local == nullptr || local->backendStatus.st_backendType != B_BG_WORKER) continue;
    bool ours = false;
    for (int w = 0; w < pool_size && !ours; w++) ours = pool[w].pid == local->backendStatus.st_procpid;
    if (!ours) used++;
  }
  pgstat_clear_backend_activity_snapshot();
  return max_worker_processes - used - pool_size;
}

// known_present: the last turn there found the extension (the worker says so
// in the log if it is gone now).
bool Launch(Oid dboid, bool known_present, BackgroundWorkerHandle** handle) {
  BackgroundWorker worker;
  std::memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = BGW_NEVER_RESTART;  // the launcher decides
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "%s", kLibraryName);
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "pg_idempotency_sweeper_main");
  snprintf(worker.bgw_name, BGW_MAXLEN, "pg_idempotency sweeper for database %u", dboid);
  snprintf(worker.bgw_type, BGW_MAXLEN, "pg_idempotency sweeper");
  worker.bgw_main_arg = ObjectIdGetDatum(dboid);
  worker.bgw_extra[0] = known_present ? 1 : 0;
  worker.bgw_notify_pid = MyProcPid;  // the postmaster wakes us when it starts or stops
  MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
  const bool ok = RegisterDynamicBackgroundWorker(&worker, handle);
  MemoryContextSwitchTo(old);
  return ok;
}

void NoteNoSlot(TimestampTz now, int waiting) {
  no_slot_until = now + backoff_us;
  backoff_us = Min(backoff_us * 2, kMaxBackoffUs);
  if (now - no_slot_logged < kNoSlotLogUs && no_slot_logged != 0) {
    no_slot_skipped++;
    return;
  }
  ereport(WARNING,
          (errmsg("pg_idempotency launcher: no free background worker slot for a sweeper (%d databases waiting)",
                  waiting),
           no_slot_skipped > 0 ? errdetail("The same happened %d times in the last minute.", no_slot_skipped) : 0,
           errhint("The launcher leaves the last free slot of max_worker_processes to the rest of the server and "
                   "retries; raise max_worker_processes if this persists.")));
  no_slot_logged = now;
  no_slot_skipped = 0;
}

// Starts workers while the pool has room and a database is due. Returns how
// many due databases are left waiting.
int Dispatch(TimestampTz now) {
  SharedState* state = Shared();
  const int64 interval = IntervalUs();
  const int max_pool = Min(settings::MaxSweepers(), kMaxPool);
  // Fewer sweepers after a SIGHUP: the newest leave at once.
  while (pool_size > max_pool) {
    Worker& extra = pool[pool_size - 1];
    TerminateBackgroundWorker(extra.handle);
    if (const int at = FindLocal(extra.dboid); at >= 0) dbs[at].running = false;
    pfree(extra.handle);
    pool_size--;
  }
  // With the sweeper off nobody is sent (a turn would only look at the
  // extension); turned on again, every overdue database is due at once.
  while (pool_size < max_pool && now >= no_slot_until && settings::SweeperEnabled()) {
    const int next = sched::Next(dbs, db_count, now, interval);
    if (next < 0) break;
    const Oid dboid = info[next].dboid;
    SpinLockAcquire(&state->mutex);
    DatabaseEntry* entry = FindDatabaseLocked(state, dboid, true);
    if (entry != nullptr) {
      entry->turn_done = false;
      entry->has_extension = false;
      entry->more_left = false;
    }
    SpinLockRelease(&state->mutex);
    if (entry == nullptr) {  // shared table full (more databases than kMaxDatabases)
      info[next].retry_at = now + kMaxRefreshUs;
      dbs[next].not_before = info[next].retry_at;
      continue;
    }
    BackgroundWorkerHandle* handle = nullptr;
    if (FreeSlots() < 2 || !Launch(dboid, dbs[next].known == sched::Known::Present, &handle)) {
      NoteNoSlot(now, sched::Waiting(dbs, db_count, now, interval));
      break;
    }
    backoff_us = kMinBackoffUs;
    pool[pool_size++] = Worker{handle, dboid, 0};
    dbs[next].running = true;
    dbs[next].woken = false;
    dbs[next].backlog = false;
    dbs[next].last_turn = now;
  }
  const int waiting = sched::Waiting(dbs, db_count, now, interval);
  SpinLockAcquire(&state->mutex);
  state->waiting = waiting;
  SpinLockRelease(&state->mutex);
  return waiting;
}

// One round; returns how long to sleep (ms).
long Tick() {
  const TimestampTz now = GetCurrentTimestamp();
  const int64 interval = IntervalUs();
  if (now >= next_refresh) {
    RefreshDatabases();
    next_refresh = now + Min(interval, kMaxRefreshUs);
  }
  TakeWakeups(now);
  ReapWorkers(now);
  ApplyHolds(now);
  const int waiting = Dispatch(now);

  // Also when the pool is full: a database falling due raises `waiting`,
  // which tells a worker past its turn's budget to make room. A worker that
  // ends sets our latch (bgw_notify_pid).
  const TimestampTz next_due = sched::NextDue(dbs, db_count, now, interval);  // once, not inside Min()
  TimestampTz wake_at = Min(Min(next_refresh, next_reprobe), next_due);
  if (waiting > 0 && pool_size < Min(settings::MaxSweepers(), kMaxPool)) wake_at = Min(wake_at, no_slot_until);
  const int64 sleep_us = wake_at - now;
  return static_cast<long>(Max(Min(sleep_us, kMaxRefreshUs), 10 * 1000) / 1000);
}

}  // namespace
}  // namespace pgi::sweeper

void pg_idempotency_launcher_main(Datum) {
  using namespace pgi::sweeper;
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
  pgstat_report_appname("pg_idempotency launcher");

  SharedState* state = Shared();
  if (state == nullptr) proc_exit(0);  // not preloaded: cannot happen for a registered worker
  SpinLockAcquire(&state->mutex);
  state->launcher_latch = MyLatch;
  // Stale requests from before a restart: everything is probed anyway.
  state->wakeups = 0;
  state->wake_overflow = false;
  SpinLockRelease(&state->mutex);
  before_shmem_exit(Detach, 0);
  next_reprobe = GetCurrentTimestamp() + kReprobeUs;
  ereport(LOG, (errmsg("pg_idempotency launcher started")));

  for (;;) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    const long sleep_ms = Tick();
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}
