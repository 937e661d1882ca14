// The sweeper launcher: one static background worker, connected to no
// database, that keeps one sweeper worker running per database that has the
// extension. See sweeper.cpp for the design.
//
// Runs only PostgreSQL calls and plain structs: an error here is promoted to
// FATAL (there is no PG_TRY frame), the launcher exits and the postmaster
// starts it again after bgw_restart_time; no C++ object is ever skipped.
#include <cstring>

#include "pg_headers.hpp"
#include "settings.hpp"
#include "sweeper_shared.hpp"

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
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PGDLLEXPORT void pg_idempotency_launcher_main(Datum main_arg);
}

namespace pgi::sweeper {
namespace {

constexpr long kMaxTickMs = 10 * 1000;
// Databases found without the extension are probed again this often (a
// safety net: CREATE EXTENSION wakes the launcher by itself).
constexpr int64 kReprobeUs = 10 * 60 * USECS_PER_SEC;
// Workers started but not yet known to have found the extension.
constexpr int kMaxProbes = 2;

enum class DbState { Unknown, Absent, Launched };

struct LocalDb {
  Oid dboid;
  DbState state;
  BackgroundWorkerHandle* handle;  // in TopMemoryContext while Launched
  TimestampTz next_launch;
  bool seen;
  bool woken;  // CREATE EXTENSION committed there since the worker was started
};

LocalDb dbs[kMaxDatabases];
int db_count = 0;
bool warned_full = false;
bool warned_no_slot = false;
TimestampTz next_reprobe = 0;

long TickMs() { return Min(static_cast<long>(settings::SweepIntervalMs()), kMaxTickMs); }

// On exit, the workers go too: a launcher started again has no handles for
// them and starts its own.
void Detach(int, Datum) {
  for (int i = 0; i < db_count; i++)
    if (dbs[i].handle != nullptr) TerminateBackgroundWorker(dbs[i].handle);
  SharedState* state = Shared();
  SpinLockAcquire(&state->mutex);
  if (state->launcher_latch == MyLatch) state->launcher_latch = nullptr;
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

LocalDb* FindLocal(Oid dboid) {
  for (int i = 0; i < db_count; i++)
    if (dbs[i].dboid == dboid) return &dbs[i];
  return nullptr;
}

bool Launch(Oid dboid, BackgroundWorkerHandle** handle) {
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
  worker.bgw_notify_pid = MyProcPid;  // the postmaster wakes us when it starts or stops
  MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
  const bool ok = RegisterDynamicBackgroundWorker(&worker, handle);
  MemoryContextSwitchTo(old);
  return ok;
}

void Tick() {
  SharedState* state = Shared();
  const TimestampTz now = GetCurrentTimestamp();

  // 1. Follow pg_database: add new databases, forget dropped ones.
  static Oid found[kMaxDatabases];
  const int found_count = ListDatabases(found, kMaxDatabases);
  // Shared entries of databases that are gone (or no longer connectable):
  // free them, so that creating and dropping databases never fills the table.
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
  for (int i = 0; i < db_count; i++) dbs[i].seen = false;
  for (int i = 0; i < found_count; i++) {
    if (LocalDb* db = FindLocal(found[i]); db != nullptr) {
      db->seen = true;
    } else if (db_count < kMaxDatabases) {
      dbs[db_count++] = LocalDb{found[i], DbState::Unknown, nullptr, 0, true, false};
    }
  }
  for (int i = 0; i < db_count;) {
    if (dbs[i].seen) {
      i++;
      continue;
    }
    // Dropped (its worker was asked to leave before). Forget it everywhere.
    if (dbs[i].handle != nullptr) {
      TerminateBackgroundWorker(dbs[i].handle);
      pfree(dbs[i].handle);
    }
    SpinLockAcquire(&state->mutex);
    if (DatabaseEntry* entry = FindDatabaseLocked(state, dbs[i].dboid, false); entry != nullptr)
      entry->dboid = InvalidOid;
    SpinLockRelease(&state->mutex);
    dbs[i] = dbs[--db_count];
  }

  // 2. Databases where CREATE EXTENSION committed, and the periodic re-probe.
  Oid wake[kMaxWakeups];
  SpinLockAcquire(&state->mutex);
  const int wake_count = state->wakeups;
  bool wake_all = state->wake_overflow;
  std::memcpy(wake, state->wake, sizeof(Oid) * wake_count);
  state->wakeups = 0;
  state->wake_overflow = false;
  SpinLockRelease(&state->mutex);
  if (now >= next_reprobe) {
    wake_all = true;
    next_reprobe = now + kReprobeUs;
  }
  for (int i = 0; i < db_count; i++) {
    bool woken = wake_all;
    for (int w = 0; w < wake_count && !woken; w++) woken = wake[w] == dbs[i].dboid;
    if (woken) dbs[i].woken = true;
  }

  // 3. Workers that ended: absent extension, or anything else (start again).
  int probes = 0;
  for (int i = 0; i < db_count; i++) {
    LocalDb& db = dbs[i];
    if (db.state != DbState::Launched) continue;
    pid_t pid = 0;
    const BgwHandleStatus status = GetBackgroundWorkerPid(db.handle, &pid);
    SpinLockAcquire(&state->mutex);
    const DatabaseEntry* entry = FindDatabaseLocked(state, db.dboid, false);
    const bool no_extension = entry != nullptr && entry->no_extension;
    const bool has_extension = entry != nullptr && entry->has_extension;
    SpinLockRelease(&state->mutex);
    if (status == BGWH_STOPPED) {
      pfree(db.handle);
      db.handle = nullptr;
      // A worker that found no extension but was started before a CREATE
      // EXTENSION committed is not the last word: woken sends it again.
      db.state = no_extension && !db.woken ? DbState::Absent : DbState::Unknown;
      db.next_launch = no_extension ? 0 : now + TickMs() * 1000;
    } else if (!has_extension) {
      probes++;
    }
  }
  for (int i = 0; i < db_count; i++)
    if (dbs[i].state == DbState::Absent && dbs[i].woken) dbs[i].state = DbState::Unknown;

  // 4. Start workers where one is due.
  for (int i = 0; i < db_count && probes < kMaxProbes; i++) {
    LocalDb& db = dbs[i];
    if (db.state != DbState::Unknown || db.next_launch > now) continue;
    SpinLockAcquire(&state->mutex);
    DatabaseEntry* entry = FindDatabaseLocked(state, db.dboid, true);
    const bool held = entry != nullptr && entry->hold_until > now;
    if (entry != nullptr && !held) {
      entry->has_extension = false;
      entry->no_extension = false;
    }
    SpinLockRelease(&state->mutex);
    if (entry == nullptr || held) continue;
    if (!Launch(db.dboid, &db.handle)) {
      if (!warned_no_slot) {
        warned_no_slot = true;
        ereport(WARNING, (errmsg("pg_idempotency launcher: no free background worker slot for a sweeper"),
                          errhint("Raise max_worker_processes.")));
      }
      break;  // try again next tick
    }
    warned_no_slot = false;
    db.state = DbState::Launched;
    db.woken = false;
    probes++;
  }
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
  ereport(LOG, (errmsg("pg_idempotency launcher started")));

  for (;;) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    pgstat_report_activity(STATE_RUNNING, "pg_idempotency: looking for databases to sweep");
    Tick();
    pgstat_report_activity(STATE_IDLE, nullptr);
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, TickMs(), PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}
