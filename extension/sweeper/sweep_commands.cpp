// What ordinary backends do for the sweeper, from a ProcessUtility hook (the
// library is preloaded into every backend). Only a few statement types are
// looked at; the claim path never comes here.
//
// * CREATE EXTENSION pg_idempotency: when its transaction commits, the
//   backend queues the database for the launcher and sets its latch, so a
//   worker sweeps there within milliseconds. A transaction that is prepared
//   (PREPARE TRANSACTION, as Citus does for DDL it propagates) is remembered
//   by its GID in shared memory, and COMMIT PREPARED of that GID, from any
//   session, wakes the launcher the same way.
// * DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... SET
//   TABLESPACE and ALTER DATABASE ... RENAME need the database free of other
//   sessions: the hook asks the worker there (if any) to end and holds the
//   launcher off the database for 10 s, so those commands succeed without
//   FORCE. Only when the issuer owns the database (or is a superuser): others
//   could not run the command anyway, and must not pause its sweeping.
#include <cstring>

#include "sweeper/sweeper.hpp"
#include "sweeper/sweeper_shared.hpp"
#include "pg/pg_compat.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
}

namespace pgi::sweeper {
namespace {

// How long the launcher keeps away from a database that a command needs free
// of sessions. The command itself waits up to 5 s for sessions to leave.
constexpr int64 kHoldUs = 10 * USECS_PER_SEC;

ProcessUtility_hook_type previous_utility_hook = nullptr;

// Whether this backend's open transaction created the extension, and the GID
// it is being prepared under, if any.
bool extension_created = false;
char preparing_gid[GIDSIZE] = "";
bool xact_callback_registered = false;

// Remembers that the prepared transaction `gid` created the extension here.
void RememberPrepared(const char* gid) {
  SharedState* shared = Shared();
  SpinLockAcquire(&shared->mutex);
  if (shared->prepared_count < kMaxPrepared) {
    PreparedCreation& entry = shared->prepared[shared->prepared_count++];
    entry.dboid = MyDatabaseId;
    strlcpy(entry.gid, gid, sizeof entry.gid);
  } else {
    shared->prepared_overflow = true;
  }
  SpinLockRelease(&shared->mutex);
}

// The prepared transaction `gid` of this database has ended (committed or
// not). Returns whether it was one that created the extension, or might be.
bool ForgetPrepared(const char* gid) {
  SharedState* shared = Shared();
  bool found = false;
  SpinLockAcquire(&shared->mutex);
  for (int i = 0; i < shared->prepared_count; i++) {
    if (shared->prepared[i].dboid == MyDatabaseId && std::strcmp(shared->prepared[i].gid, gid) == 0) {
      shared->prepared[i] = shared->prepared[--shared->prepared_count];
      found = true;
      break;
    }
  }
  const bool maybe = found || shared->prepared_overflow;
  SpinLockRelease(&shared->mutex);
  return maybe;
}

void OnTransactionEnd(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_COMMIT:
      if (extension_created) WakeLauncher(MyDatabaseId);
      extension_created = false;
      preparing_gid[0] = '\0';
      break;
    case XACT_EVENT_PREPARE:  // durable now; COMMIT PREPARED may come from any session
      if (extension_created && preparing_gid[0] != '\0') RememberPrepared(preparing_gid);
      extension_created = false;
      preparing_gid[0] = '\0';
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
      extension_created = false;
      preparing_gid[0] = '\0';
      break;
    default:
      break;
  }
}

// Asks the sweeper worker in database `name` to leave and keeps the launcher
// away from it for a while, so that a command needing the database free of
// sessions does not fail because of us.
void FreeDatabase(const char* name) {
  SharedState* shared = Shared();
  if (shared == nullptr || name == nullptr) return;
  const Oid dboid = get_database_oid(name, true);
  // Only for those the command may succeed for (owners, superusers): nobody
  // else can pause another database's sweeper by issuing a doomed DROP.
  if (!OidIsValid(dboid) || !compat::IsDatabaseOwner(dboid, GetUserId())) return;
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

// Holds nothing with a destructor: errors longjmp through.
void UtilityHook(PlannedStmt* pstmt, const char* query_string, bool read_only_tree, ProcessUtilityContext context,
                 ParamListInfo params, QueryEnvironment* query_env, DestReceiver* dest, QueryCompletion* qc) {
  Node* statement = pstmt->utilityStmt;
  bool creates_extension = false;
  const char* finishing_gid = nullptr;  // COMMIT PREPARED / ROLLBACK PREPARED
  bool commits_prepared = false;
  switch (nodeTag(statement)) {
    case T_CreateExtensionStmt:
      creates_extension = std::strcmp(reinterpret_cast<CreateExtensionStmt*>(statement)->extname, kExtensionName) == 0;
      break;
    case T_TransactionStmt: {
      auto* transaction = reinterpret_cast<TransactionStmt*>(statement);
      if (transaction->kind == TRANS_STMT_PREPARE && extension_created && transaction->gid != nullptr)
        strlcpy(preparing_gid, transaction->gid, sizeof preparing_gid);
      if (transaction->kind == TRANS_STMT_COMMIT_PREPARED || transaction->kind == TRANS_STMT_ROLLBACK_PREPARED) {
        finishing_gid = transaction->gid;
        commits_prepared = transaction->kind == TRANS_STMT_COMMIT_PREPARED;
      }
      break;
    }
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
  // Reached only when the statement succeeded.
  if (Shared() == nullptr) return;
  if (creates_extension) {
    if (!xact_callback_registered) {
      RegisterXactCallback(OnTransactionEnd, nullptr);
      xact_callback_registered = true;
    }
    extension_created = true;
  }
  // COMMIT PREPARED runs in the prepared transaction's database.
  if (finishing_gid != nullptr && ForgetPrepared(finishing_gid) && commits_prepared) WakeLauncher(MyDatabaseId);
}

}  // namespace

void InstallCommandHooks() {
  previous_utility_hook = ProcessUtility_hook;
  ProcessUtility_hook = UtilityHook;
}

}  // namespace pgi::sweeper
