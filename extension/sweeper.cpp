// The background sweeper: registration, shared state and the hooks ordinary
// backends run for it. The launcher is in sweep_launcher.cpp, the
// per-database worker in sweep_worker.cpp.
//
// Design
// ------
// * One launcher (a static background worker, restarted 5 s after a crash) is
//   connected to no database: it reads the shared catalog pg_database on each
//   tick (min(sweep_interval, 10 s), or at once when woken) and keeps one
//   dynamic sweeper worker per database that has the extension.
// * Whether a database has the extension can only be read from inside it, so
//   the worker itself is the probe: it connects, looks for the extension and
//   exits at once, noting "absent" in shared memory, when it is not there. The
//   launcher probes each database once when it first sees it (start-up, or a
//   new database), then never again on its own except every 10 minutes as a
//   safety net: a database without the extension costs one short-lived
//   process at start-up and nothing after. At most two probes run at once, so
//   start-up never takes more than a couple of max_worker_processes slots.
// * CREATE EXTENSION pg_idempotency is seen by a ProcessUtility hook (the
//   library is preloaded into every backend); when its transaction commits the
//   backend queues the database in shared memory and sets the launcher's latch,
//   so sweeping starts within milliseconds, long before one sweep_interval.
// * DROP EXTENSION: the worker checks for the extension in every sweep
//   transaction; when it is gone the worker notes "absent" and exits, and the
//   launcher does not start it again (until the next CREATE EXTENSION).
// * DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... SET
//   TABLESPACE and ALTER DATABASE ... RENAME need the database free of other
//   sessions. The same hook asks that database's worker to end (SIGTERM) and
//   holds the launcher off it for 10 s, so those commands succeed without
//   FORCE. Only when the command's issuer owns the database (or is a
//   superuser): others could not run it anyway. Template databases (datistemplate) and databases that refuse
//   connections are never swept.
// * A worker that ends any other way (crash, pg_terminate_backend, error) is
//   started again by the launcher one tick later. A kill -9 makes the
//   postmaster restart every process; the launcher comes back with the others
//   and probes every database afresh.
#include "sweeper.hpp"

#include <cstring>

#include "pg_headers.hpp"
#include "sweeper_shared.hpp"

extern "C" {
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/acl.h"
}

namespace pgi::sweeper {
namespace {

// How long the launcher keeps away from a database that a command needs free
// of sessions. The command itself waits up to 5 s for sessions to leave.
constexpr int64 kHoldUs = 10 * USECS_PER_SEC;

SharedState* shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;
ProcessUtility_hook_type previous_utility_hook = nullptr;

// Whether this backend's open transaction created the extension.
bool extension_created = false;
bool xact_callback_registered = false;

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

// Queues dboid for the launcher and wakes it.
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

void OnTransactionEnd(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_COMMIT:
      if (extension_created) {
        extension_created = false;
        WakeLauncher(MyDatabaseId);
      }
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:  // the commit may happen in another session: the 10-minute probe finds it
      extension_created = false;
      break;
    default:
      break;
  }
}

// Asks the sweeper worker of database `name` to leave and keeps the launcher
// away from it for a while, so that a command needing the database free of
// sessions does not fail because of us.
void FreeDatabase(const char* name) {
  if (shared == nullptr || name == nullptr) return;
  const Oid dboid = get_database_oid(name, true);
  // Only for those the command may succeed for (owners, superusers): nobody
  // else can pause another database's sweeper by issuing a doomed DROP.
  if (!OidIsValid(dboid) || !pg_database_ownercheck(dboid, GetUserId())) return;
  const TimestampTz hold_until = GetCurrentTimestamp() + kHoldUs;
  pid_t pid = 0;
  SpinLockAcquire(&shared->mutex);
  if (DatabaseEntry* entry = FindDatabaseLocked(shared, dboid, true); entry != nullptr) {
    entry->hold_until = hold_until;
    pid = entry->pid;
  }
  SpinLockRelease(&shared->mutex);
  if (pid != 0) kill(pid, SIGTERM);
}

bool HasOption(List* options, const char* name) {
  ListCell* cell;
  foreach (cell, options) {
    if (std::strcmp(static_cast<DefElem*>(lfirst(cell))->defname, name) == 0) return true;
  }
  return false;
}

// Runs in every backend for every utility statement; only a few statement
// types are looked at. Holds nothing with a destructor: errors longjmp through.
void UtilityHook(PlannedStmt* pstmt, const char* query_string, bool read_only_tree, ProcessUtilityContext context,
                 ParamListInfo params, QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
  Node* statement = pstmt->utilityStmt;
  bool creates_extension = false;
  switch (nodeTag(statement)) {
    case T_CreateExtensionStmt:
      creates_extension = std::strcmp(reinterpret_cast<CreateExtensionStmt*>(statement)->extname, kExtensionName) == 0;
      break;
    case T_DropdbStmt:
      FreeDatabase(reinterpret_cast<DropdbStmt*>(statement)->dbname);
      break;
    case T_CreatedbStmt: {
      const char* source = "template1";
      ListCell* cell;
      foreach (cell, reinterpret_cast<CreatedbStmt*>(statement)->options) {
        auto* option = static_cast<DefElem*>(lfirst(cell));
        if (std::strcmp(option->defname, "template") == 0 && option->arg != nullptr) source = defGetString(option);
      }
      FreeDatabase(source);
      break;
    }
    case T_AlterDatabaseStmt: {
      auto* alter = reinterpret_cast<AlterDatabaseStmt*>(statement);
      if (HasOption(alter->options, "tablespace")) FreeDatabase(alter->dbname);
      break;
    }
    case T_RenameStmt: {
      auto* rename = reinterpret_cast<RenameStmt*>(statement);
      if (rename->renameType == OBJECT_DATABASE) FreeDatabase(rename->subname);
      break;
    }
    default:
      break;
  }
  if (previous_utility_hook != nullptr)
    previous_utility_hook(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
  else
    standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
  if (creates_extension && shared != nullptr) {
    if (!xact_callback_registered) {
      RegisterXactCallback(OnTransactionEnd, nullptr);
      xact_callback_registered = true;
    }
    extension_created = true;
  }
}

void RegisterLauncher() {
  BackgroundWorker worker;
  std::memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
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

void Init() {
  previous_request_hook = shmem_request_hook;
  shmem_request_hook = RequestSharedMemory;
  previous_startup_hook = shmem_startup_hook;
  shmem_startup_hook = AttachSharedMemory;
  previous_utility_hook = ProcessUtility_hook;
  ProcessUtility_hook = UtilityHook;
  // pg_upgrade's server must not have workers connecting to its databases.
  if (!IsBinaryUpgrade) RegisterLauncher();
}

}  // namespace pgi::sweeper
