# PGXS build of the pg_idempotency extension (C++17).
# The C++ client, its tests and the demo are built by CMakeLists.txt instead.

MODULE_big = pg_idempotency
# Sources by layer: extension/module.cpp (_PG_init) on top, then the request
# path (request/), the keys table (keys/), the sweeper (sweeper/) and the
# PostgreSQL boundary (pg/).
EXTENSION_DIRS = extension extension/request extension/keys extension/sweeper extension/pg
OBJS = $(patsubst %.cpp,%.o,$(foreach dir,$(EXTENSION_DIRS),$(wildcard $(dir)/*.cpp)))

# The control file and scripts live in sql/, so install them as DATA
# into share/extension ourselves rather than through EXTENSION.
MODULEDIR = extension
DATA = sql/pg_idempotency.control $(wildcard sql/pg_idempotency--*.sql)

# Tests are found by wildcard: test/sql/*.sql and test/specs/*.spec.
REGRESS = $(sort $(patsubst test/sql/%.sql,%,$(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test --outputdir=test
ISOLATION = $(sort $(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/isolation_output

# PostgreSQL headers are C and not warning-clean as C++: treat them as system
# headers so warnings (and -Werror) apply to the project's own code only.
PG_CONFIG ?= pg_config
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server)
# Project includes are qualified by folder from extension/: "keys/store.hpp".
PG_CPPFLAGS += -Iextension
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
# Warnings are errors only when asked (`make WERROR=1`, as scripts/test does), so a
# user's or a packager's build never fails on a newer compiler's new warning.
WERROR ?= 0
ifeq ($(WERROR),1)
PG_CXXFLAGS += -Werror
endif

SHLIB_LINK = -lstdc++

# Header dependencies: PGXS alone rebuilds nothing when a header changes.
PG_CXXFLAGS += -MMD -MP

# No JIT bitcode for C++ sources (the server's clang step is not wanted here).
override with_llvm = no

# The version lives in VERSION (CMakeLists.txt and debian/rules read it too).
IDEMPOTENCY_VERSION := $(shell cat VERSION)
DIST_ARCHIVE = pg_idempotency-$(IDEMPOTENCY_VERSION).zip

EXTRA_CLEAN = META.json $(DIST_ARCHIVE) $(OBJS:.o=.d) test/results test/regression.diffs test/regression.out test/isolation_output

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# After PGXS, so that a dependency rule never becomes the default goal.
-include $(OBJS:.o=.d)

# PGXN: META.json (the spec's version 1.0.0) from META.json.in and VERSION, and
# the release archive of the committed tree with it (`make dist`).
META.json: META.json.in VERSION
	sed -e 's/@VERSION@/$(IDEMPOTENCY_VERSION)/g' META.json.in >$@

.PHONY: dist
dist: META.json
	git archive --format=zip --prefix=pg_idempotency-$(IDEMPOTENCY_VERSION)/ --add-file=META.json -o $(DIST_ARCHIVE) HEAD
