// <idempotency/observer.hpp> — what a Client and the HTTP middleware tell an
// observer (tracing, metrics, logs), without depending on any of them.
//
// The core library stays libpq-only: this header is plain C++. An Observer is
// given to a Client (ClientOptions::observer: every idempotency.* call) and to
// the middleware (http::Options::observer: every request). With none set
// nothing is measured, hashed or allocated. <idempotency/opentelemetry.hpp>
// is the OpenTelemetry implementation; an application may write its own.
//
// Callbacks run on the thread that made the call and must be quick; the
// noexcept ones must not throw (they run while an Error may be in flight).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

// libpq's connection handle; include <libpq-fe.h> to use it directly.
typedef struct pg_conn PGconn;

namespace idempotency {

// One call of an idempotency.* SQL function by a Client, once it has answered
// or failed. execute() and once() send BEGIN with the claim and finish with
// COMMIT in one round trip (pipelining): the call's time includes them.
struct SqlCall {
  std::string_view function;                  // "idempotency.claim", "idempotency.finish", ...
  std::chrono::system_clock::time_point start;  // when the call was sent
  std::chrono::steady_clock::duration duration;
  std::string_view sqlstate;  // empty: it succeeded; otherwise the Error's SQLSTATE
  PGconn* connection;         // for the server's address and database name (PQhost, PQport, PQdb)
};

// What the middleware did with a request that named a key.
//   Claimed    the key was new (or taken over): the handler ran and its answer was stored;
//   Replay     the key was completed: the stored answer was sent again;
//   InProgress another request holds the key: 409;
//   Mismatch   the key was used with another request: 422;
//   Rejected   nothing was claimed or kept: no valid key (400), a body that is not the
//              JSON it claims to be (400), or a Reject thrown by the scope callback or
//              the handler (the claim was rolled back, the key is free).
// A request that failed (5xx) has no outcome; RequestEnd::error_type says why.
enum class RequestOutcome { Claimed, Replay, InProgress, Mismatch, Rejected };

// "claimed", "replay", "in_progress", "mismatch", "rejected".
const char* to_string(RequestOutcome) noexcept;

// A request arriving at the middleware.
struct RequestStart {
  std::string_view method, path;
  // The incoming W3C Trace Context headers (empty when absent).
  std::string_view traceparent, tracestate;
};

// The request answered.
struct RequestEnd {
  std::optional<RequestOutcome> outcome;  // unset: failed, or no key (optional keys)
  int status = 0;                         // the HTTP status sent
  std::string_view scope;                 // empty when no key was claimed
  int attempt = 0;                        // Claimed: 1, or >1 for a takeover of a crashed holder's key
  std::string key_hash;                   // key_hash(key); empty without a key
  std::string_view key;                   // the raw key, only for an observer whose wants_raw_key()
  // Replay / InProgress: the W3C traceparent stored by the request that claimed the key
  // (that request's span), when it stored one.
  std::optional<std::string> stored_trace_context;
  // Replay: how long ago the stored answer was made (its completion), when known
  // (the observation asked for it: RequestObservation::wants_first_execution_age()).
  std::optional<std::chrono::system_clock::duration> first_execution_age;
  std::string_view error_type;  // failed: the SQLSTATE, or the handler's 5xx status
  std::chrono::steady_clock::duration duration{};
};

// One request being observed (returned by Observer::request_started, ended once).
class RequestObservation {
 public:
  virtual ~RequestObservation() = default;
  // The W3C traceparent the claim stores with the key, for later replays to link
  // to (nullopt: store none). Asked once, just before the claim.
  virtual std::optional<std::string> trace_context() const { return std::nullopt; }
  // true: on a replay the middleware looks the key up (one more round trip) to
  // fill RequestEnd::first_execution_age. Ask only when it will be recorded.
  virtual bool wants_first_execution_age() const { return false; }
  virtual void ended(const RequestEnd&) noexcept = 0;
};

class Observer {
 public:
  virtual ~Observer() = default;
  virtual void sql_call(const SqlCall&) noexcept {}
  // May return null (this request is not observed). Called on the serving thread,
  // before anything else the middleware does for the request.
  virtual std::unique_ptr<RequestObservation> request_started(const RequestStart&) { return nullptr; }
  // Keys can be sensitive: RequestEnd::key is filled only for an observer that says so.
  virtual bool wants_raw_key() const noexcept { return false; }
};

// Lower-case hex SHA-256 of the key's bytes: the same key gives the same hash in
// every process and language, and the key itself is not recorded.
std::string key_hash(std::string_view key);

}  // namespace idempotency
