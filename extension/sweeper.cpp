#include "sweeper.hpp"

namespace pgi::sweeper {

// The launcher lands with the sweeper issue; until then sweep() is manual.
void Init() {}

}  // namespace pgi::sweeper
