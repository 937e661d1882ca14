// The boundary between C++ and PostgreSQL error handling.
//
// PostgreSQL reports errors with longjmp, which skips C++ destructors; C++
// reports them with exceptions, which PostgreSQL cannot catch. Two tools keep
// them apart:
//   PgCall(fn)  runs fn, which calls into PostgreSQL, inside PG_TRY. An error is
//               copied and thrown as PgError, so C++ unwinding runs destructors.
//               fn must keep only trivially destructible objects in scope and
//               must not throw.
//   Guard(fn)   wraps the body of every extern "C" entry point. It catches
//               everything, leaves the try block (running all destructors) and
//               only then reports: a PgError is re-thrown as it was (same
//               SQLSTATE, message, detail), an Error becomes an ereport with its
//               SQLSTATE, anything else an internal error.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "pg/pg_headers.hpp"

namespace pgi {

// A PostgreSQL error caught by PgCall, carried to Guard untouched.
class PgError : public std::exception {
 public:
  explicit PgError(ErrorData* data) noexcept : data_(data) {}
  ErrorData* data() const noexcept { return data_; }
  int sqlstate() const noexcept { return data_->sqlerrcode; }
  const char* what() const noexcept override { return data_->message ? data_->message : "PostgreSQL error"; }

 private:
  ErrorData* data_;
};

// An error the extension raises itself.
class Error : public std::exception {
 public:
  Error(int sqlstate, std::string message, std::string detail = {}, std::string hint = {})
      : sqlstate_(sqlstate), message_(std::move(message)), detail_(std::move(detail)), hint_(std::move(hint)) {}
  int sqlstate() const noexcept { return sqlstate_; }
  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& detail() const noexcept { return detail_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  int sqlstate_;
  std::string message_, detail_, hint_;
};

namespace detail {
template <typename Fn>
void PgCallVoid(Fn& fn) {
  MemoryContext volatile caller_context = CurrentMemoryContext;
  ErrorData* volatile error = nullptr;
  PG_TRY();
  { fn(); }
  PG_CATCH();
  {
    // CopyErrorData must not run in ErrorContext, which is reset on rethrow.
    MemoryContextSwitchTo(caller_context);
    error = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  if (error != nullptr) throw PgError(error);
}
}  // namespace detail

template <typename Fn>
auto PgCall(Fn&& fn) {
  using Result = std::invoke_result_t<Fn&>;
  if constexpr (std::is_void_v<Result>) {
    detail::PgCallVoid(fn);
  } else {
    static_assert(std::is_trivially_copyable_v<Result> && std::is_trivially_destructible_v<Result>,
                  "PgCall results cross a longjmp boundary: keep them trivial");
    Result result{};
    auto store = [&] { result = fn(); };
    detail::PgCallVoid(store);
    return result;
  }
}

template <typename Fn>
Datum Guard(Fn&& body) {
  // Everything that survives the catch blocks is trivially destructible, so the
  // ereport below may longjmp freely.
  ErrorData* pg_error = nullptr;
  int sqlstate = ERRCODE_INTERNAL_ERROR;
  char message[1024] = "";
  char detail[1024] = "";
  char hint[512] = "";
  try {
    return body();
  } catch (const PgError& e) {
    pg_error = e.data();
  } catch (const Error& e) {
    sqlstate = e.sqlstate();
    snprintf(message, sizeof message, "%s", e.what());
    snprintf(detail, sizeof detail, "%s", e.detail().c_str());
    snprintf(hint, sizeof hint, "%s", e.hint().c_str());
  } catch (const std::bad_alloc&) {
    sqlstate = ERRCODE_OUT_OF_MEMORY;
    snprintf(message, sizeof message, "out of memory in pg_idempotency");
  } catch (const std::exception& e) {
    snprintf(message, sizeof message, "internal error in pg_idempotency: %s", e.what());
  } catch (...) {
    snprintf(message, sizeof message, "internal error in pg_idempotency: unknown exception");
  }
  if (pg_error != nullptr) ReThrowError(pg_error);
  ereport(ERROR, (errcode(sqlstate), errmsg_internal("%s", message), detail[0] ? errdetail_internal("%s", detail) : 0,
                  hint[0] ? errhint("%s", hint) : 0));
  pg_unreachable();
}

}  // namespace pgi
