// <idempotency/client.hpp> — the C++ client of the pg_idempotency extension.
//
// A thin layer over libpq (and nothing else). One Client wraps one connection:
//   Client c("host=... dbname=...");   // owns its connection
//   Client c(pgconn);                  // borrows the caller's PGconn*: every call
//                                      // runs inside the caller's transaction
// A Client is not thread-safe (neither is a PGconn): use one per thread.
//
// Every SQL error comes back as idempotency::Error carrying the SQLSTATE
// (IK001, IK002, 22023, 54000, ...). A connection that is lost or cannot be
// made is an Error too (sqlstate "08006" / "08001"), never an outcome.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "idempotency/observer.hpp"

// libpq's connection handle; include <libpq-fe.h> to use it directly.
typedef struct pg_conn PGconn;

namespace idempotency {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;

enum class Outcome { Claimed, Replay, InProgress, Mismatch };

// "claimed", "replay", "in_progress", "mismatch" (the SQL enum labels).
const char* to_string(Outcome) noexcept;

// A stored (or new) result. body holds raw bytes (NULs allowed).
// headers_json is a JSON object as text; empty means "no headers" (SQL NULL).
struct Response {
  int status = 0;
  std::string body;
  std::string headers_json;
};

struct ClaimOptions {
  std::optional<std::string> fingerprint;                     // raw digest bytes (at most 64)
  std::optional<std::chrono::milliseconds> ttl, lease, wait;  // unset: the server's defaults, wait 0
  // Added members.
  // 1.2: the request's W3C traceparent, stored with the key when it is claimed
  // (needs the extension at 1.2; unset: the claim works with 1.0 and 1.1 too).
  std::optional<std::string> trace_context = std::nullopt;
};

struct ClaimResult {
  Outcome outcome = Outcome::InProgress;
  std::optional<std::int64_t> token;          // set when Claimed
  int attempt = 0;                            // 1 = fresh claim, >1 = takeover (0 if not Claimed)
  std::optional<std::string> recovery_point;  // kept across takeovers
  std::optional<Response> response;           // Replay: the stored one; execute() Claimed: the new one
  // Added members.
  std::optional<TimePoint> expires_at;
  std::optional<TimePoint> locked_until;  // lease end (Claimed / InProgress when known)
  // 1.2, when the claim passed ClaimOptions::trace_context: the traceparent of
  // the request that claimed the key (Replay, InProgress: the link to it;
  // Claimed: the one just stored; Mismatch: none).
  std::optional<std::string> trace_context;

  bool claimed() const noexcept { return outcome == Outcome::Claimed; }
  bool replayed() const noexcept { return outcome == Outcome::Replay; }
};

enum class KeyState { InProgress, Completed };

// One row of idempotency.keys, as returned by lookup().
struct KeyRecord {
  std::string scope, key;
  std::optional<std::string> fingerprint;
  KeyState state = KeyState::InProgress;
  std::int64_t token = 0;
  int attempt = 0;
  std::optional<std::string> recovery_point;
  std::optional<TimePoint> locked_until, created_at, completed_at, expires_at;
  std::optional<Response> response;  // set once completed
};

class Error : public std::runtime_error {
 public:
  Error(std::string sqlstate, const std::string& message)
      : std::runtime_error(message), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  // Class 08: the connection is gone or could not be made; nothing about the
  // key can be concluded, retry on a new connection.
  bool connection_error() const noexcept { return sqlstate_.rfind("08", 0) == 0; }

 private:
  std::string sqlstate_;
};

// How a Client talks to the server (members may be added).
struct ClientOptions {
  // Behind a transaction pooler (PgBouncer pool_mode = transaction, RDS Proxy,
  // Supavisor, ...) consecutive transactions may run on different server
  // connections, so nothing may be kept on a connection between transactions.
  // true: every call is one unnamed extended-protocol statement (parse, bind
  // and execute in the same round trip, with binary parameters), nothing is
  // prepared. false (the default, fastest on a direct connection or a session
  // pooler): named statements prepared once per connection.
  bool pooler = false;
  // In prepared mode the Client prepares all its named statements together,
  // in one pipeline or transaction, so behind a transaction pooler every
  // server connection holds all of them or none: once a transaction's first
  // statement ran named, the rest of it (finish after the handler) cannot
  // fail for a missing statement. A named statement that the server does not
  // know (26000) or already knows (42P05) means a pooler is moving this
  // Client between server connections; the Client then switches to pooler
  // mode for good. The failed call is retried where nothing else can have
  // run since the failure began: a statement outside any transaction, or
  // execute()'s / once()'s first statement after its own BEGIN/SAVEPOINT
  // (the handler has not run) - so with the default options no call fails
  // behind PgBouncer. Inside the caller's own transaction (a borrowed
  // connection) the Error is thrown: that transaction has failed.
  bool detect_pooler = true;
  // execute() sends BEGIN + claim in one round trip and finish + COMMIT in
  // another (libpq pipeline mode, libpq >= 14), in both modes; false (or a
  // libpq without pipelining) sends each statement on its own.
  bool pipeline = true;
  // Told about every idempotency.* call (see <idempotency/observer.hpp>); none: nothing is measured.
  std::shared_ptr<Observer> observer;
};

// The handler of execute(): runs inside the transaction that holds the key,
// on this connection, so its writes commit or roll back with the key.
using Handler = std::function<Response(PGconn*)>;

// once(): the consumer's work for a new key, on this connection and in the
// same transaction as the key.
using OnceHandler = std::function<void(PGconn*)>;

struct OnceOptions {
  std::optional<std::chrono::milliseconds> ttl;   // unset: idempotency.default_ttl
  std::optional<std::chrono::milliseconds> wait;  // unset: 0, answer at once
};

class Client {
 public:
  explicit Client(const std::string& conninfo);  // owns its connection
  explicit Client(PGconn* borrowed);             // joins the caller's transaction
  Client(const std::string& conninfo, const ClientOptions& options);
  Client(PGconn* borrowed, const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  ClaimResult claim(std::string_view scope, std::string_view key, const ClaimOptions& = {});
  bool finish(std::string_view scope, std::string_view key, std::int64_t token, const Response&);
  // Records progress and renews the lease; returns the new locked_until.
  TimePoint checkpoint(std::string_view scope, std::string_view key, std::int64_t token,
                       std::string_view recovery_point, std::optional<std::chrono::milliseconds> lease = std::nullopt);
  bool release(std::string_view scope, std::string_view key, std::int64_t token);
  std::optional<KeyRecord> lookup(std::string_view scope, std::string_view key);
  std::int64_t sweep(std::optional<int> batch_size = std::nullopt);
  // idempotency.fingerprint(request::jsonb): SHA-256 of the canonical JSON
  // (key order and white space do not matter). Malformed JSON: Error 22P02.
  std::string fingerprint(std::string_view request_json);
  // claim() with the fingerprint computed by the server from request_json in
  // the same round trip (options.fingerprint is ignored).
  ClaimResult claim_json(std::string_view scope, std::string_view key, std::string_view request_json,
                         const ClaimOptions& = {});

  // claim -> handler -> finish in one transaction; returns the new response
  // (outcome Claimed), the stored one (Replay), or InProgress / Mismatch
  // without running the handler. If the handler (or finish) throws, the work
  // and the claim are rolled back and the exception is rethrown.
  //
  // Transactions: with no transaction open on the connection (always the case
  // for an owning Client used only through this API), execute runs
  // BEGIN ... COMMIT itself. If the (borrowed) connection is already inside a
  // transaction block, execute joins it under a SAVEPOINT: a throwing handler
  // rolls back to the savepoint (the key is free again, the caller's earlier
  // work stays) and the caller's COMMIT makes the key and the work durable.
  // A connection in a failed transaction is refused with Error 25P02.
  // The handler uses the connection synchronously and must not end the
  // transaction itself (no COMMIT/ROLLBACK); a handler that swallows an SQL
  // error leaves the transaction failed, which finish reports (25P02).
  ClaimResult execute(std::string_view scope, std::string_view key, std::optional<std::string> fingerprint,
                      const Handler& handler);
  ClaimResult execute(std::string_view scope, std::string_view key, const ClaimOptions& options,
                      const Handler& handler);
  // execute() fingerprinting a JSON request on the server (see claim_json).
  ClaimResult execute_json(std::string_view scope, std::string_view key, std::string_view request_json,
                           const Handler& handler, const ClaimOptions& options = {});

  // Idempotent consumers (a message, webhook or job delivered more than once):
  // idempotency.once(scope, key), then handler(conn) in the same transaction
  // when the key is new. Returns whether the handler ran (false: already
  // processed, acknowledge the message). A throwing handler rolls back both
  // the key and its work, and the exception is rethrown. Another transaction
  // still holding the key (past options.wait) is Error 55P03: do not
  // acknowledge the message, it may yet roll back. Transactions and savepoints
  // work as for execute().
  bool once(std::string_view scope, std::string_view key, const OnceHandler& handler);
  bool once(std::string_view scope, std::string_view key, const OnceOptions& options, const OnceHandler& handler);

  PGconn* connection() const noexcept { return conn_; }
  bool owns_connection() const noexcept { return owned_; }
  const ClientOptions& options() const noexcept { return options_; }
  // Whether calls go out as unnamed statements (options().pooler, or a pooler
  // was detected).
  bool pooler_mode() const noexcept { return options_.pooler; }

 private:
  PGconn* conn_ = nullptr;
  bool owned_ = false;
  bool checked_existing_ = false;  // borrowed: looked in pg_prepared_statements
  unsigned prepared_ = 0;          // bit i: statement i is prepared on conn_
  ClientOptions options_;
  friend struct Detail;
  ClaimResult claim_impl(std::string_view scope, std::string_view key, const ClaimOptions&,
                         const std::string_view* request_json);
  ClaimResult execute_impl(std::string_view scope, std::string_view key, const ClaimOptions&,
                           const std::string_view* request_json, const Handler& handler);
};

// ---- HTTP mapping -------------------------------------------------------
// What an HTTP endpoint honouring Idempotency-Key should answer.
struct HttpReply {
  int status = 0;
  std::string body;                                          // raw bytes
  std::vector<std::pair<std::string, std::string>> headers;  // stored headers + markers
};

// Claimed (from execute) -> the new response; Replay -> the stored status and
// body byte for byte plus "Idempotent-Replayed: true"; InProgress -> 409 with
// "Retry-After" (seconds until locked_until, at least 1); Mismatch -> 422.
// The stored headers_json (a flat JSON object) becomes headers.
// Error bodies are JSON {"error": "<code>", "message": "<text>"}.
HttpReply to_http(const ClaimResult& result, TimePoint now = Clock::now());
// 400 for a request without a (valid) Idempotency-Key.
HttpReply missing_key_reply();
// 400 for any other bad request, with the given code and message.
HttpReply error_reply(int status, std::string_view code, std::string_view message);
// Checks an Idempotency-Key header value: 1-255 bytes.
bool valid_key(std::string_view key) noexcept;
// Parses a flat JSON object of scalars into (name, value) pairs; string values
// are unescaped, other scalars are kept as written. An array of scalars (a
// header sent more than once, as the Node and Python middleware store two
// Set-Cookie lines) gives one pair per element, in order. Throws Error 22P02
// on anything else.
std::vector<std::pair<std::string, std::string>> parse_headers_json(std::string_view json);
// Escapes s as a JSON string literal (with the quotes).
std::string json_quote(std::string_view s);

}  // namespace idempotency
