// A sweeper worker: one turn in one database, handed to it by the launcher
// (see sweeper.cpp). It deletes expired keys in transactions of at most
// sweep_batch_size rows through keys::SweepExpiredFrom (rows being written
// are skipped: it never waits for a claim, and a claim never waits for more
// than one batch of it; each batch starts in the expires_at index where the
// last one ended, not over the dead entries of the rows deleted before it)
// until a batch comes back short, yielding to the claims beside it (short
// batches, each followed by a pause in proportion to its time,
// idempotency.sweep_throttle, and long enough to keep to a deletion rate
// derived from the claim rate; see sweep_pacing.hpp). A turn that has used
// its budget (sweep_interval / 2) while another database waits for a worker
// stops early and tells the launcher that keys are left, so the database gets
// another turn soon. Then the worker reports in shared memory and exits.
//
// Errors: every PostgreSQL call that may raise an ERROR runs inside PgCall,
// which turns it into a C++ exception; the sweep pass catches it, aborts the
// transaction, logs a WARNING and the database's next turn comes one interval
// later. Nothing with a destructor lives in a frame that a longjmp could
// cross. FATAL (SIGTERM, postmaster death) exits the process directly.
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <optional>

#include "pg/boundary.hpp"
#include "pg/settings.hpp"
#include "pg/stats.hpp"
#include "sweeper/sweep_pacing.hpp"
#include "sweeper/sweep_schedule.hpp"
#include "sweeper/sweeper_shared.hpp"
#include "keys/keys.hpp"  // last of ours: it brings PostgreSQL's headers
#include "pg/pg_headers.hpp"

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

enum class PassEnd { Done, MoreLeft, NoExtension, Failed };

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

// The turn's outcome, for the launcher (read once this process has ended).
void Report(const PassResult& pass) {
  SharedState* state = Shared();
  SpinLockAcquire(&state->mutex);
  if (DatabaseEntry* entry = FindDatabaseLocked(state, MyDatabaseId, false); entry != nullptr) {
    entry->turn_done = true;
    entry->has_extension = pass.end != PassEnd::NoExtension;
    entry->more_left = pass.end == PassEnd::MoreLeft;
  }
  SpinLockRelease(&state->mutex);
}

// Whether another database is waiting for a worker.
bool OthersWaiting() {
  SharedState* state = Shared();
  SpinLockAcquire(&state->mutex);
  const bool waiting = state->waiting > 0;
  SpinLockRelease(&state->mutex);
  return waiting;
}

// One transaction: checks that the extension is still here and, when limit is
// positive, deletes up to limit expired keys, from the expiry *from on (moved
// to where this batch ended). Returns how many, or -1 when the extension is
// gone. Throws PgError.
int64 SweepTransaction(int64 limit, TimestampTz* from) {
  const bool present = PgCall([] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    enable_timeout_after(STATEMENT_TIMEOUT, kStatementTimeoutMs);
    PushActiveSnapshot(GetTransactionSnapshot());
    return OidIsValid(get_extension_oid(kExtensionName, true));
  });
  uint64 deleted = 0;
  if (present && limit > 0) {
    keys::Link spi;
    deleted = keys::SweepExpiredFrom(GetCurrentTransactionStartTimestamp(), limit, from, spi);
    spi.Done();
  }
  PgCall([] {
    PopActiveSnapshot();
    CommitTransactionCommand();
    disable_timeout(STATEMENT_TIMEOUT, false);
  });
  return present ? static_cast<int64>(deleted) : -1;
}

// CPU time this process has used, in microseconds. Pacing counts work in CPU
// time, not wall time: on a busy machine a batch that waits for a CPU is not
// work, and counting it would shrink batches and lengthen pauses for nothing.
int64 CpuMicros() {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<int64>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// Sleeps `us` unless signalled (SIGHUP, SIGTERM set the latch) and returns
// how long it really slept. Throws PgError.
int64 Pause(int64 us) {
  const TimestampTz start = GetCurrentTimestamp();
  if (us > 0) {
    const long ms = static_cast<long>((us + 999) / 1000);
    PgCall([ms] {
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
    });
  }
  PgCall([] { CHECK_FOR_INTERRUPTS(); });  // SIGTERM between batches
  return GetCurrentTimestamp() - start;
}

// One turn: batches until one comes back short (or, with the sweeper off,
// only the extension check). Never throws.
PassResult SweepPass(TimestampTz start) noexcept {
  PassResult result{PassEnd::Done, 0, 0};
  char message[1024] = "";
  int64 limit = 0;  // rows asked of the last batch
  int64 last_deleted = 0;
  int64 last_elapsed = 0;
  int64 worked = 0;  // CPU time spent in sweep transactions this turn
  int64 slept = 0;   // wall time spent pausing
  // Where the next batch starts in the expires_at index: where the last one
  // ended, so no batch walks again over the entries of rows deleted before it.
  TimestampTz from = DT_NOBEGIN;
  // The insert rate the deletion rate follows (sweep_pacing.hpp).
  pacing::ClaimRate claim_rate;
  pacing::RatePacer pacer;
  claim_rate.Update(start, stats::Read(stats::Counter::Claims));
  try {
    for (;;) {
      if (ConfigReloadPending) {
        ConfigReloadPending = false;
        PgCall([] { ProcessConfigFile(PGC_SIGHUP); });
      }
      limit = settings::SweeperEnabled() ? pacing::NextLimit(limit, last_deleted, last_elapsed,
                                                             settings::SweepBatchSize(), settings::SweepThrottle())
                                         : 0;
      const int64 batch_cpu = CpuMicros();
      const TimestampTz batch_wall = GetCurrentTimestamp();
      const int64 deleted = SweepTransaction(limit, &from);
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
      // Turned off in the middle of a turn: turned on again, it goes on at once.
      if (limit == 0 && result.transactions > 1) result.end = PassEnd::MoreLeft;
      if (last) break;
      const TimestampTz now = GetCurrentTimestamp();
      last_deleted = deleted;
      last_elapsed = std::max<int64>(CpuMicros() - batch_cpu, 1);
      worked += last_elapsed;
      const int64 budget = schedule::TurnBudget(static_cast<int64>(settings::SweepIntervalMs()) * 1000);
      if (now - start >= budget && OthersWaiting()) {
        PgCall([] { pgstat_report_stat(true); });
        result.end = PassEnd::MoreLeft;
        break;
      }
      // Paced: the CPU share (throttle) and the rate derived from the
      // claims, whichever asks the longer pause.
      const double throttle = settings::SweepThrottle();
      int64 owed = pacing::PauseOwed(worked, slept, throttle);
      if (throttle > 0) {
        const std::optional<double> claims = claim_rate.Update(now, stats::Read(stats::Counter::Claims));
        // Called once: it advances the pacer's schedule (PostgreSQL's Max()
        // macro would evaluate it twice and double every pause).
        const int64 paced = pacer.PauseAfter(now, deleted, pacing::TargetRate(claims));
        owed = std::max(owed, paced);
      }
      const int64 paused = Pause(owed);
      slept += paused;
      // Where a turn's time goes (log_min_messages = debug2): rows per batch,
      // its wall and CPU time, the pause owed and really slept.
      PgCall([&] {
        elog(DEBUG2,
             "pg_idempotency sweeper: batch of %lld rows (limit %lld) in %lld us, %lld us CPU; paused %lld us of %lld "
             "(claims %.0f/s, -1: not measured yet)",
             static_cast<long long>(deleted), static_cast<long long>(limit), static_cast<long long>(now - batch_wall),
             static_cast<long long>(last_elapsed), static_cast<long long>(paused), static_cast<long long>(owed),
             claim_rate.rate().value_or(-1));
      });
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
    // retries the database a little later.
    AbortCurrentTransaction();
    disable_timeout(STATEMENT_TIMEOUT, false);
    ereport(WARNING, (errmsg("pg_idempotency sweeper: sweep of database \"%s\" failed after %llu keys: %s",
                             database_name, static_cast<unsigned long long>(result.deleted), message),
                      errhint("The sweeper tries again after idempotency.sweep_interval.")));
  }
  if (result.deleted > 0 || (settings::SweeperEnabled() && result.end == PassEnd::Done)) stats::NoteSweep();
  return result;
}

}  // namespace
}  // namespace pgi::sweeper

void pg_idempotency_sweeper_main(Datum main_arg) {
  using namespace pgi;
  using namespace pgi::sweeper;
  const Oid dboid = DatumGetObjectId(main_arg);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, die);  // ends a running statement too, not only a pause
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

  pgstat_report_activity(STATE_RUNNING, "pg_idempotency: deleting expired keys");
  const TimestampTz start = GetCurrentTimestamp();
  const PassResult pass = SweepPass(start);
  Report(pass);
  if (pass.end == PassEnd::NoExtension) {
    // A probe (a database never seen with the extension) says so only at
    // DEBUG1: at start-up every database is looked at once.
    const bool was_present = MyBgworkerEntry->bgw_extra[0] != 0;
    ereport(was_present ? LOG : DEBUG1,
            (errmsg("pg_idempotency sweeper: no extension pg_idempotency in database \"%s\", exiting", database_name)));
  } else if (pass.deleted > 0) {
    long seconds = 0;
    int microseconds = 0;
    TimestampDifference(start, GetCurrentTimestamp(), &seconds, &microseconds);
    const double ms = seconds * 1000.0 + microseconds / 1000.0;
    ereport(LOG, (errmsg("pg_idempotency sweeper: deleted %llu expired keys in database \"%s\" in %.1f ms "
                         "(%d transactions, %.0f keys/s)%s",
                         static_cast<unsigned long long>(pass.deleted), database_name, ms, pass.transactions,
                         ms > 0 ? pass.deleted * 1000.0 / ms : 0.0,
                         pass.end == PassEnd::MoreLeft ? "; more left for its next turn" : "")));
  }
  proc_exit(0);
}
