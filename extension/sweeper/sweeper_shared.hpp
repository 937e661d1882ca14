// State the sweeper's processes share: the launcher, the sweeper workers and
// ordinary backends (which wake the launcher after CREATE EXTENSION and keep
// workers away from a database before DROP DATABASE).
//
// Everything here is a plain C struct in shared memory guarded by one
// spinlock; critical sections are a few loads and stores, never a call that
// can fail. Only the library's own processes and utility commands touch it,
// never the claim path.
#pragma once

#include "pg/pg_headers.hpp"

extern "C" {
#include "storage/spin.h"
}

namespace pgi::sweeper {

constexpr const char* kLibraryName = "pg_idempotency";
constexpr const char* kExtensionName = "pg_idempotency";

// Databases tracked at once (each costs a few bytes). A cluster with more
// connectable databases than this logs a warning and leaves the rest unswept.
constexpr int kMaxDatabases = 512;
// Databases woken by CREATE EXTENSION between two launcher ticks; on overflow
// the launcher probes every database it has found without the extension.
constexpr int kMaxWakeups = 32;
// Prepared transactions that created the extension and are not yet
// committed; on overflow every COMMIT PREPARED wakes the launcher.
constexpr int kMaxPrepared = 16;

struct DatabaseEntry {
  Oid dboid;               // InvalidOid: free entry
  pid_t pid;               // the worker now connected there, 0 if none
  TimestampTz hold_until;  // no worker before this: a command needs the database free of sessions
  // The outcome of the last turn, written by its worker before it exits and
  // cleared by the launcher before it starts the next one.
  bool turn_done;      // false: the worker failed, was stopped, or could not start
  bool has_extension;  // the extension was there
  bool more_left;      // the turn stopped with expired keys left
};

struct PreparedCreation {
  Oid dboid;
  char gid[GIDSIZE];
};

struct SharedState {
  slock_t mutex;
  Latch* launcher_latch;  // nullptr while no launcher runs
  int waiting;            // databases due that no worker has taken yet (set by the launcher)
  int wakeups;
  bool wake_overflow;
  Oid wake[kMaxWakeups];
  int prepared_count;
  bool prepared_overflow;
  PreparedCreation prepared[kMaxPrepared];
  DatabaseEntry databases[kMaxDatabases];
};

// nullptr when the library was not preloaded.
SharedState* Shared();

// The entry of dboid, made if asked and there is room; nullptr otherwise.
// Call with the mutex held.
DatabaseEntry* FindDatabaseLocked(SharedState* state, Oid dboid, bool create);

// Queues dboid for the launcher (a database to look at now) and wakes it.
void WakeLauncher(Oid dboid);

}  // namespace pgi::sweeper
