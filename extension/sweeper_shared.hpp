// State the sweeper's processes share: the launcher, the per-database sweeper
// workers and ordinary backends (which wake the launcher after CREATE
// EXTENSION and pause a database's worker before DROP DATABASE).
//
// Everything here is a plain C struct in shared memory guarded by one
// spinlock; critical sections are a few loads and stores, never a call that
// can fail. Only the library's own processes touch it, never the claim path.
#pragma once

#include "pg_headers.hpp"

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

struct DatabaseEntry {
  Oid dboid;               // InvalidOid: free entry
  pid_t pid;               // the worker now connected there, 0 if none
  bool has_extension;      // set by the worker once it has seen the extension
  bool no_extension;       // set by a worker that exits because it is absent
  TimestampTz hold_until;  // no worker before this: a command needs the database free of sessions
};

struct SharedState {
  slock_t mutex;
  Latch* launcher_latch;  // nullptr while no launcher runs
  int wakeups;
  bool wake_overflow;
  Oid wake[kMaxWakeups];
  DatabaseEntry databases[kMaxDatabases];
};

// nullptr when the library was not preloaded.
SharedState* Shared();

// The entry of dboid, made if asked and there is room; nullptr otherwise.
// Call with the mutex held.
DatabaseEntry* FindDatabaseLocked(SharedState* state, Oid dboid, bool create);

}  // namespace pgi::sweeper
