// Fencing tokens: one new token per claim (claim() and once()).
#pragma once

#include "pg/pg_headers.hpp"

namespace pgi::token {

// A positive, non-zero token, unique per claim with overwhelming probability.
int64 New();

}  // namespace pgi::token
