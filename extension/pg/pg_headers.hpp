// The one door through which PostgreSQL's C headers enter this project's C++.
//
// Files that include this header talk to PostgreSQL; files that don't (such as
// decide.cpp) are plain C++ and can be unit-tested without a server. Include
// every C++ standard header *before* this one: postgres.h defines macros
// (Min, Max, gettext, ...) that break standard headers included after it.
#pragma once

extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

// Declares a SQL-callable function with C linkage, as the fmgr looks it up.
#define PGI_SQL_FUNCTION(name) \
  extern "C" {                 \
  PG_FUNCTION_INFO_V1(name);   \
  }                            \
  extern "C" Datum name(PG_FUNCTION_ARGS)
