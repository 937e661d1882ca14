// Library entry: _PG_init only hands over to each module's Init().
//
// The folders are layers; includes only point down or sideways:
//   request/  the SQL-callable calls (claim, finish, once, ...) and their parts
//   sweeper/  the background sweeper: launcher, workers, schedule, commands
//   keys/     the keys table: statements, direct reads and writes, Citus
//   pg/       the PostgreSQL boundary: the guard, headers, version differences,
//             arguments, settings, shared counters, bounded waits
#include "pg/settings.hpp"
#include "pg/stats.hpp"
#include "sweeper/sweeper.hpp"

#include "pg/pg_headers.hpp"

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

void _PG_init(void) {
  pgi::settings::Init();
  // Shared memory and background workers can only be set up while preloading;
  // loaded later (on first use in a backend) the SQL functions still work.
  if (!process_shared_preload_libraries_in_progress) return;
  pgi::stats::Init();
  pgi::sweeper::Init();
}
