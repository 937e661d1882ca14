// Template bodies of bounded_wait::Run and Poll (see bounded_wait.hpp).
#pragma once

extern "C" {
#include "storage/proc.h"
#include "utils/resowner.h"
}

namespace pgi::bounded_wait {

// Only rolling back a subtransaction makes catching an error safe, so the
// wait runs in one; lock_timeout turns a wait that runs out into that error,
// and the deadlock detector a wait that never would.
template <typename Fn>
bool Run(int timeout_ms, Fn&& fn) {
  MemoryContext caller_context = CurrentMemoryContext;
  ResourceOwner caller_owner = CurrentResourceOwner;
  const int saved_lock_timeout = LockTimeout;
  volatile bool completed = false;
  BeginInternalSubTransaction(nullptr);
  MemoryContextSwitchTo(caller_context);
  PG_TRY();
  {
    LockTimeout = timeout_ms > 0 ? timeout_ms : 1;
    fn();
    LockTimeout = saved_lock_timeout;
    ReleaseCurrentSubTransaction();
    completed = true;
  }
  PG_CATCH();
  {
    LockTimeout = saved_lock_timeout;
    MemoryContextSwitchTo(caller_context);
    ErrorData* error = CopyErrorData();
    FlushErrorState();
    // Every error ends the subtransaction here, before it travels on: left
    // open, the caller's PL/pgSQL handler or savepoint would roll back this
    // one instead of its own, and at top level the session would stay in an
    // aborted transaction block ("current transaction is aborted").
    RollbackAndReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(caller_context);
    CurrentResourceOwner = caller_owner;
    // A deadlock is a wait that would never end: answered like one that ran
    // out (the caller says in_progress), and rolling back this subtransaction
    // withdraws our wait, which breaks the cycle.
    if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE && error->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED)
      ReThrowError(error);
    FreeErrorData(error);
  }
  PG_END_TRY();
  MemoryContextSwitchTo(caller_context);
  CurrentResourceOwner = caller_owner;
  return completed;
}

template <typename Fn>
bool Poll(int timeout_ms, Fn&& try_once) {
  constexpr long kFirstPauseMs = 5;
  constexpr long kLongestPauseMs = 50;
  const TimestampTz deadline = GetCurrentTimestamp() + static_cast<int64>(timeout_ms) * 1000;
  for (long pause_ms = kFirstPauseMs;; pause_ms = Min(pause_ms * 2, kLongestPauseMs)) {
    if (try_once()) return true;
    const TimestampTz now = GetCurrentTimestamp();
    if (now >= deadline) return false;
    const long sleep_ms = Min(pause_ms, static_cast<long>((deadline - now + 999) / 1000));
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
  }
}

}  // namespace pgi::bounded_wait
