// One sweeper worker per database that has the extension (started by the
// launcher, see sweeper.cpp). Every sweep_interval it deletes expired keys in
// transactions of at most sweep_batch_size rows, through store::SweepExpired
// (SKIP LOCKED: it never waits for a claim, and a claim never waits for more
// than one batch of it), until a batch comes back short.
//
// Errors: every PostgreSQL call that may raise an ERROR runs inside PgCall,
// which turns it into a C++ exception; the sweep pass catches it, aborts the
// transaction, logs a WARNING and tries again one interval later. Nothing with
// a destructor lives in a frame that a longjmp could cross. FATAL (SIGTERM,
// postmaster death) exits the process directly, which is what we want.
#include <cstdio>
#include <exception>

#include "boundary.hpp"
#include "pg_headers.hpp"
#include "settings.hpp"
#include "stats.hpp"
#include "store.hpp"
#include "sweeper_shared.hpp"

extern "C" {
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

PGDLLEXPORT void pg_idempotency_sweeper_main(Datum main_arg);
}

namespace pgi::sweeper {
namespace {

// A sweep statement picks rows with SKIP LOCKED, so it can only wait for a
// relation lock (DROP EXTENSION, VACUUM FULL, ...): give up quickly and try
// again next interval rather than queue in front of claims.
constexpr const char* kLockTimeout = "500ms";
// Set by hand: SPI does not arm statement_timeout, only the client protocol does.
constexpr int kStatementTimeoutMs = 30 * 1000;

char database_name[NAMEDATALEN] = "";

enum class PassEnd { Done, NoExtension, Failed };

struct PassResult {
  PassEnd end;
  uint64 deleted;
  int transactions;
};

void SetSetting(const char* name, const char* value) {
  (void)set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);
}

// Registers this worker in shared memory. False if the database is held for
// a command that needs it free of sessions, or another worker is still there.
bool Register() {
  SharedState* state = Shared();
  const TimestampTz now = GetCurrentTimestamp();
  SpinLockAcquire(&state->mutex);
  DatabaseEntry* entry = FindDatabaseLocked(state, MyDatabaseId, true);
  bool ok = entry != nullptr && entry->hold_until <= now && entry->pid == 0;
  if (ok) entry->pid = MyProcPid;
  SpinLockRelease(&state->mutex);
  return ok;
}

void Unregister(int, Datum) {
  SharedState* state = Shared();
  SpinLockAcquire(&state->mutex);
  DatabaseEntry* entry = FindDatabaseLocked(state, MyDatabaseId, false);
  if (entry != nullptr && entry->pid == MyProcPid) entry->pid = 0;
  SpinLockRelease(&state->mutex);
}

// Records whether the extension is here; the first time it is, wakes the
// launcher (it limits how many unconfirmed workers start at once).
void NoteExtension(bool present) {
  SharedState* state = Shared();
  SpinLockAcquire(&state->mutex);
  DatabaseEntry* entry = FindDatabaseLocked(state, MyDatabaseId, false);
  bool first = false;
  if (entry != nullptr) {
    first = present && !entry->has_extension;
    entry->has_extension = present;
    entry->no_extension = !present;
  }
  Latch* launcher = state->launcher_latch;
  SpinLockRelease(&state->mutex);
  if (first && launcher != nullptr) SetLatch(launcher);
}

// One transaction: checks that the extension is still here and, when limit is
// positive, deletes up to limit expired keys. Returns how many, or -1 when the
// extension is gone. Throws PgError.
int64 SweepTransaction(int64 limit) {
  const bool present = PgCall([] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    enable_timeout_after(STATEMENT_TIMEOUT, kStatementTimeoutMs);
    PushActiveSnapshot(GetTransactionSnapshot());
    return OidIsValid(get_extension_oid(kExtensionName, true));
  });
  uint64 deleted = 0;
  if (present && limit > 0) {
    store::Connect();
    deleted = store::SweepExpired(GetCurrentTransactionStartTimestamp(), limit);
    store::Disconnect();
  }
  PgCall([] {
    PopActiveSnapshot();
    CommitTransactionCommand();
    disable_timeout(STATEMENT_TIMEOUT, false);
  });
  return present ? static_cast<int64>(deleted) : -1;
}

// One sweep: batches until one comes back short (or, with sweep off, only the
// extension check). Never throws.
PassResult SweepPass(bool sweep) noexcept {
  PassResult result{PassEnd::Done, 0, 0};
  char message[1024] = "";
  try {
    for (;;) {
      const int64 limit = sweep ? settings::SweepBatchSize() : 0;
      const int64 deleted = SweepTransaction(limit);
      if (deleted < 0) {
        result.end = PassEnd::NoExtension;
        break;
      }
      result.transactions++;
      result.deleted += static_cast<uint64>(deleted);
      if (deleted > 0) stats::Add(stats::Counter::Swept, static_cast<uint64>(deleted));
      // A background worker must flush its table statistics itself (at most
      // once a second unless forced): autovacuum learns of the dead rows from
      // them, and pg_stat_user_tables shows the deletions.
      const bool last = deleted < limit || limit == 0;
      PgCall([last] { pgstat_report_stat(last); });
      if (last) break;
      PgCall([] { CHECK_FOR_INTERRUPTS(); });  // SIGTERM between batches
    }
  } catch (const PgError& e) {
    snprintf(message, sizeof message, "%s", e.what());
    FreeErrorData(e.data());
    result.end = PassEnd::Failed;
  } catch (const std::exception& e) {
    snprintf(message, sizeof message, "internal error: %s", e.what());
    result.end = PassEnd::Failed;
  } catch (...) {
    snprintf(message, sizeof message, "internal error: unknown exception");
    result.end = PassEnd::Failed;
  }
  if (result.end == PassEnd::Failed) {
    // Outside any PG_TRY: an error here is promoted to FATAL and the launcher
    // starts a fresh worker.
    AbortCurrentTransaction();
    disable_timeout(STATEMENT_TIMEOUT, false);
    ereport(WARNING, (errmsg("pg_idempotency sweeper: sweep of database \"%s\" failed after %llu keys: %s",
                             database_name, static_cast<unsigned long long>(result.deleted), message),
                      errhint("The sweeper tries again after idempotency.sweep_interval.")));
  }
  if (result.deleted > 0 || (sweep && result.end == PassEnd::Done)) stats::NoteSweep();
  return result;
}

}  // namespace
}  // namespace pgi::sweeper

void pg_idempotency_sweeper_main(Datum main_arg) {
  using namespace pgi;
  using namespace pgi::sweeper;
  const Oid dboid = DatumGetObjectId(main_arg);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);  // ends a running statement too, not only the sleep
  BackgroundWorkerUnblockSignals();
  if (Shared() == nullptr) proc_exit(0);
  BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
  if (!Register()) proc_exit(0);  // the launcher tries again later
  before_shmem_exit(Unregister, 0);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  if (const char* name = get_database_name(MyDatabaseId); name != nullptr)
    snprintf(database_name, sizeof database_name, "%s", name);
  CommitTransactionCommand();

  SetSetting("application_name", "pg_idempotency sweeper");
  SetSetting("lock_timeout", kLockTimeout);
  // Losing the last sweep in a crash is harmless: the rows are swept again.
  SetSetting("synchronous_commit", "off");

  for (;;) {
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    const bool sweep = settings::SweeperEnabled();
    pgstat_report_activity(STATE_RUNNING, sweep ? "pg_idempotency: deleting expired keys"
                                                : "pg_idempotency: sweeper off, checking the extension");
    const TimestampTz start = GetCurrentTimestamp();
    const PassResult pass = SweepPass(sweep);
    if (pass.end == PassEnd::NoExtension) {
      NoteExtension(false);
      ereport(LOG, (errmsg("pg_idempotency sweeper: no extension pg_idempotency in database \"%s\", exiting",
                           database_name)));
      proc_exit(0);
    }
    if (pass.end == PassEnd::Done) NoteExtension(true);
    if (pass.deleted > 0) {
      long seconds = 0;
      int microseconds = 0;
      TimestampDifference(start, GetCurrentTimestamp(), &seconds, &microseconds);
      const double ms = seconds * 1000.0 + microseconds / 1000.0;
      ereport(LOG, (errmsg("pg_idempotency sweeper: deleted %llu expired keys in database \"%s\" in %.1f ms "
                           "(%d transactions, %.0f keys/s)",
                           static_cast<unsigned long long>(pass.deleted), database_name, ms, pass.transactions,
                           ms > 0 ? pass.deleted * 1000.0 / ms : 0.0)));
    }
    pgstat_report_activity(STATE_IDLE, nullptr);
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, settings::SweepIntervalMs(),
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    try {
      PgCall([] { CHECK_FOR_INTERRUPTS(); });  // SIGTERM exits here (FATAL); a stray cancel is ignored
    } catch (const PgError& e) {
      FreeErrorData(e.data());
    } catch (...) {  // PgCall throws nothing else; never let anything reach C
    }
  }
}
