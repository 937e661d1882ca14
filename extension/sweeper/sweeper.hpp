// The background sweeper: a launcher worker that hands a bounded pool of
// sweeper workers to the databases that have the extension, in turn.
#pragma once

namespace pgi::sweeper {

// Registers the launcher background worker, the shared memory and the
// command hooks. Call from _PG_init while preloading.
void Init();

// Installs the ProcessUtility hook (sweep_commands.cpp). Called by Init().
void InstallCommandHooks();

}  // namespace pgi::sweeper
