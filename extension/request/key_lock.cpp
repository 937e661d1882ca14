#include "request/key_lock.hpp"

#include <algorithm>

#include "pg/boundary.hpp"
#include "pg/bounded_wait.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "common/hashfn.h"
}

namespace pgi::key_lock {
namespace {

constexpr uint16 kLockClass = 0x49B1;  // distinct from advisory classes 1 and 2

LOCKTAG TagFor(const args::KeyRef& key) {
  // Chain the key's hash off the scope's so ("a","bc") and ("ab","c") differ.
  const uint64 scope_hash = hash_bytes_extended(reinterpret_cast<const unsigned char*>(VARDATA_ANY(key.scope)),
                                                VARSIZE_ANY_EXHDR(key.scope), 0x6964656dULL);
  const uint64 hash = hash_bytes_extended(reinterpret_cast<const unsigned char*>(VARDATA_ANY(key.key)),
                                          VARSIZE_ANY_EXHDR(key.key), scope_hash);
  LOCKTAG tag;
  SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(hash >> 32), static_cast<uint32>(hash), kLockClass);
  return tag;
}

}  // namespace

bool TryAcquire(const args::KeyRef& key, int64 wait_us) {
  const LOCKTAG tag = TagFor(key);
  return PgCall([&] {
    if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL) return true;
    if (wait_us <= 0) return false;
    // A real lock wait, so that the waiter shows in pg_locks and
    // pg_stat_activity and wakes the moment the holder's transaction ends.
    const int wait_ms = static_cast<int>(std::min<int64>((wait_us + 999) / 1000, INT_MAX));
    return bounded_wait::Run(wait_ms, [&] { (void)LockAcquire(&tag, ExclusiveLock, false, false); });
  });
}

void Acquire(const args::KeyRef& key) {
  const LOCKTAG tag = TagFor(key);
  PgCall([&] { (void)LockAcquire(&tag, ExclusiveLock, false, false); });
}

}  // namespace pgi::key_lock
