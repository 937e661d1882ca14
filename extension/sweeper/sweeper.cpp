// The background sweeper: registration and shared state. The launcher is in
// sweep_launcher.cpp, which database goes next in sweep_schedule.cpp, the
// worker's turn in sweep_worker.cpp, and what ordinary backends do for it
// (CREATE EXTENSION, DROP DATABASE, COMMIT PREPARED) in sweep_commands.cpp.
//
// Design
// ------
// * One launcher (a static background worker, restarted 5 s after a crash) is
//   connected to no database. It reads the shared catalog pg_database and
//   hands at most idempotency.max_sweepers dynamic workers at a time to the
//   databases, one database per worker, as autovacuum does: so the extension
//   never holds more than max_sweepers + 1 background-worker slots, whatever
//   the number of databases.
// * A worker connects to its database, sweeps it for one turn (in batches,
//   paced by idempotency.sweep_throttle) and exits, reporting in shared memory
//   whether the extension was there and whether expired keys are left.
// * Whether a database has the extension can only be read from inside it, so
//   the worker itself is the probe: a database without it costs one short
//   turn at start-up (and every 10 minutes as a safety net) and nothing else.
// * CREATE EXTENSION pg_idempotency wakes the launcher when its transaction
//   commits (also through PREPARE TRANSACTION + COMMIT PREPARED), so sweeping
//   starts within milliseconds.
// * DROP EXTENSION: the worker checks for the extension in every sweep
//   transaction; once it is gone the database is not visited again (until the
//   next CREATE EXTENSION).
// * DROP DATABASE and the other commands that need a database free of
//   sessions ask the worker there to leave and hold the launcher off it.
// * The launcher and its workers start only once recovery has finished
//   (BgWorkerStart_RecoveryFinished): on a standby nothing runs and nothing is
//   logged; after promotion the postmaster starts the launcher.
#include "sweeper/sweeper.hpp"

#include <cstring>

#include "sweeper/sweeper_shared.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
}

namespace pgi::sweeper {
namespace {

SharedState* shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

void RequestSharedMemory() {
  if (previous_request_hook) previous_request_hook();
  RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
}

void AttachSharedMemory() {
  if (previous_startup_hook) previous_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found = false;
  shared = static_cast<SharedState*>(ShmemInitStruct("pg_idempotency sweeper", sizeof(SharedState), &found));
  if (!found) {
    std::memset(static_cast<void*>(shared), 0, sizeof(SharedState));
    SpinLockInit(&shared->mutex);
  }
  LWLockRelease(AddinShmemInitLock);
}

void RegisterLauncher() {
  BackgroundWorker worker;
  std::memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;  // a primary only, after promotion too
  worker.bgw_restart_time = 5;  // seconds; also brings it back after pg_terminate_backend
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "%s", kLibraryName);
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "pg_idempotency_launcher_main");
  snprintf(worker.bgw_name, BGW_MAXLEN, "pg_idempotency launcher");
  snprintf(worker.bgw_type, BGW_MAXLEN, "pg_idempotency launcher");
  RegisterBackgroundWorker(&worker);
}

}  // namespace

SharedState* Shared() { return shared; }

DatabaseEntry* FindDatabaseLocked(SharedState* state, Oid dboid, bool create) {
  DatabaseEntry* free_entry = nullptr;
  for (DatabaseEntry& entry : state->databases) {
    if (entry.dboid == dboid) return &entry;
    if (free_entry == nullptr && entry.dboid == InvalidOid) free_entry = &entry;
  }
  if (!create || free_entry == nullptr) return nullptr;
  *free_entry = DatabaseEntry{};
  free_entry->dboid = dboid;
  return free_entry;
}

void WakeLauncher(Oid dboid) {
  if (shared == nullptr) return;
  SpinLockAcquire(&shared->mutex);
  if (shared->wakeups < kMaxWakeups)
    shared->wake[shared->wakeups++] = dboid;
  else
    shared->wake_overflow = true;
  Latch* latch = shared->launcher_latch;
  SpinLockRelease(&shared->mutex);
  if (latch != nullptr) SetLatch(latch);
}

void Init() {
  previous_request_hook = shmem_request_hook;
  shmem_request_hook = RequestSharedMemory;
  previous_startup_hook = shmem_startup_hook;
  shmem_startup_hook = AttachSharedMemory;
  InstallCommandHooks();
  // pg_upgrade's server must not have workers connecting to its databases.
  if (!IsBinaryUpgrade) RegisterLauncher();
}

}  // namespace pgi::sweeper
