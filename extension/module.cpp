// Library entry: _PG_init only hands over to each module's Init().
#include "pg_headers.hpp"
#include "settings.hpp"
#include "stats.hpp"
#include "sweeper.hpp"

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
