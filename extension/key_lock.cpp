#include "key_lock.hpp"

#include <algorithm>

#include "boundary.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "common/hashfn.h"
}

namespace pgi::key_lock {
namespace {

constexpr uint16 kLockClass = 0x49B1;  // distinct from advisory classes 1 and 2
constexpr int64 kMaxSleepUs = 10 * 1000;

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
    // Poll on our latch with a growing sleep: cheap, interruptible, and never
    // enters the deadlock detector, so a waiting claim cannot deadlock.
    const TimestampTz deadline = GetCurrentTimestamp() + wait_us;
    int64 sleep_us = 500;
    for (;;) {
      const TimestampTz now = GetCurrentTimestamp();
      if (now >= deadline) return false;
      const long timeout_ms = std::max<long>(1, std::min<int64>(sleep_us, deadline - now) / 1000);
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms, PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
      CHECK_FOR_INTERRUPTS();
      if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL) return true;
      sleep_us = std::min(sleep_us * 2, kMaxSleepUs);
    }
  });
}

void Acquire(const args::KeyRef& key) {
  const LOCKTAG tag = TagFor(key);
  PgCall([&] { (void)LockAcquire(&tag, ExclusiveLock, false, false); });
}

}  // namespace pgi::key_lock
