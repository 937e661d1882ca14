// The background sweeper: a launcher worker and one sweeper worker per
// database that has the extension.
#pragma once

namespace pgi::sweeper {

// Registers the launcher background worker. Call from _PG_init while preloading.
void Init();

}  // namespace pgi::sweeper
