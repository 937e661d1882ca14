// <idempotency/httplib.hpp> — Idempotency-Key handling for cpp-httplib routes.
//
// Header-only and optional: include it only in a service that already uses
// cpp-httplib (Debian's libcpp-httplib-dev) and link cpp-httplib yourself; the
// core library stays libpq-only.
//
//   idempotency::http::ConnectionPool pool("dbname=app", 16);
//   idempotency::http::Middleware idem(pool);
//   server.Post("/payments", idem.wrap([](const httplib::Request& req, httplib::Response& res, PGconn* conn) {
//     // business logic only: runs inside the transaction that holds the key
//     ... INSERT ... on conn ...
//     res.status = 201;
//     res.set_content(R"({"id": 7})", "application/json");
//   }));
//
// For each request the wrapper
//  - reads the key header (Options::key_header, 1-255 bytes; 400 when required and absent or invalid);
//  - takes the scope from Options::scope (default: method and path);
//  - fingerprints method + path + body (canonical JSON via idempotency.fingerprint for JSON bodies,
//    the raw bytes otherwise; an empty body is no body, whatever its Content-Type), or only the JSON
//    body, or nothing (Options::fingerprint);
//  - claims the key, runs the handler on the same connection and transaction, stores the response
//    (status, body and the headers worth replaying; a header sent more than once, e.g. two
//    Set-Cookie lines, as a JSON array of its values) with finish(), and commits: one transaction;
//  - replays a completed key byte for byte with "Idempotent-Replayed: true", answers 409 with
//    Retry-After while another request holds the key, 422 when the key was used with another request;
//  - answers 503 when the database connection is lost (the connection is dropped; the next request
//    gets a new one) and 500 on any other failure, after rolling back the work and the claim;
//  - backpressure: waits at most Options::pool_wait (default 2 s) for a pooled connection, then
//    answers 503 "database_busy" with Retry-After (Options::busy_retry_after, default 1 s) instead of
//    queueing: no request waits unboundedly for the database, and a burst larger than the pool is
//    shed, not stored up. (A waiting request holds one of the server's worker threads; bound the
//    server's own queue of accepted connections as cpp-httplib allows.)
// A handler that throws Reject answers without storing anything (e.g. a validation error: the client
// may fix the request and retry with the same key); a handler that throws anything else, or sets a
// status of 500 or more, rolls back too (the work did not happen; a retry runs it again).
// Error bodies are JSON {"error": "<code>", "message": "<text>"}.
#pragma once

#include <httplib.h>
#include <libpq-fe.h>
#include <poll.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "idempotency/client.hpp"
#include "idempotency/httplib_observe.hpp"

namespace idempotency::http {

// ---- connections -------------------------------------------------------------

// acquire() found no connection free within its wait: the pool is exhausted
// (every connection is busy), not broken. SQLSTATE 08004, as before this type
// existed; the middleware answers 503 "database_busy" with Retry-After.
class PoolExhausted : public Error {
 public:
  explicit PoolExhausted(std::chrono::milliseconds waited)
      : Error("08004", "idempotency: no database connection became free within " + std::to_string(waited.count()) +
                           " ms (every pooled connection is busy)") {}
};

// A small pool of Clients, each owning one connection, shared by the server's
// worker threads. A connection is used by one request at a time; one that was
// lost is dropped and replaced by a new one on the next acquire().
class ConnectionPool {
 public:
  // make() builds one connected Client (the one place that says how to connect).
  using Factory = std::function<std::unique_ptr<Client>()>;

  ConnectionPool(Factory make, std::size_t max_size,
                 std::chrono::milliseconds acquire_timeout = std::chrono::seconds(10))
      : make_(std::move(make)), max_size_(max_size < 1 ? 1 : max_size), timeout_(acquire_timeout) {}
  explicit ConnectionPool(const std::string& conninfo, std::size_t max_size = 8)
      : ConnectionPool([conninfo] { return std::make_unique<Client>(conninfo); }, max_size) {}
  // Behind a transaction pooler (PgBouncer pool_mode = transaction):
  // ClientOptions::pooler = true (see <idempotency/client.hpp>).
  ConnectionPool(const std::string& conninfo, std::size_t max_size, const ClientOptions& client_options)
      : ConnectionPool([conninfo, client_options] { return std::make_unique<Client>(conninfo, client_options); },
                       max_size) {}
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // One connection, given back to the pool when the Lease ends (unless it is broken).
  class Lease {
   public:
    Lease(ConnectionPool* pool, std::unique_ptr<Client> client) : pool_(pool), client_(std::move(client)) {}
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), client_(std::move(o.client_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_) pool_->give_back(std::move(client_));
    }
    Client& operator*() const { return *client_; }
    Client* operator->() const { return client_.get(); }
    PGconn* connection() const { return client_->connection(); }
    // The connection is gone (or unusable): close it instead of giving it back.
    void discard() { client_.reset(); }

   private:
    ConnectionPool* pool_;
    std::unique_ptr<Client> client_;
  };

  // A healthy connection: an idle one, or a new one while fewer than max_size
  // exist; otherwise waits up to acquire_timeout (or `wait`) for one to come
  // back, then throws PoolExhausted. Throws Error (class 08) when no
  // connection can be made.
  Lease acquire() { return acquire(timeout_); }
  Lease acquire(std::chrono::milliseconds wait) {
    std::unique_ptr<Client> client;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!cv_.wait_for(lock, wait, [this] { return !idle_.empty() || open_ < max_size_; })) {
        throw PoolExhausted(wait);
      }
      if (!idle_.empty()) {
        client = std::move(idle_.back());
        idle_.pop_back();
      } else {
        ++open_;  // a slot for the connection made below
      }
    }
    if (client && !alive(client->connection())) client.reset();  // terminated while idle: replace it
    if (!client) {
      try {
        client = make_();
      } catch (...) {
        forget_one();
        throw;
      }
    }
    return Lease(this, std::move(client));
  }

  std::size_t max_size() const noexcept { return max_size_; }

 private:
  // An idle connection whose server went away has unread bytes (the FATAL
  // message) and then EOF waiting on its socket: read them without blocking so
  // that libpq notices, instead of failing the next request's first statement.
  static bool alive(PGconn* conn) {
    for (int i = 0; i < 3 && PQstatus(conn) == CONNECTION_OK; ++i) {
      pollfd p{PQsocket(conn), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;
      if (!PQconsumeInput(conn)) break;
      while (PGnotify* n = PQnotifies(conn)) PQfreemem(n);
    }
    return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
  }
  void give_back(std::unique_ptr<Client> client) {
    if (client && PQstatus(client->connection()) == CONNECTION_OK &&
        PQtransactionStatus(client->connection()) == PQTRANS_IDLE) {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.push_back(std::move(client));
      cv_.notify_one();
      return;
    }
    client.reset();
    forget_one();
  }
  void forget_one() {
    std::lock_guard<std::mutex> lock(mutex_);
    --open_;
    cv_.notify_one();
  }

  Factory make_;
  const std::size_t max_size_;
  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Client>> idle_;
  std::size_t open_ = 0;  // connections that exist: idle + leased
};

// ---- the middleware ------------------------------------------------------------

// What the request's fingerprint (checked against the key's) is made of.
enum class FingerprintOf {
  Request,   // method + path + body: canonical JSON when Content-Type is JSON, raw bytes otherwise
             // (an empty body is no body: never 400, whatever its Content-Type)
  JsonBody,  // idempotency.fingerprint(body): the body must be JSON (malformed: 400; empty: JSON null)
  Nothing,   // no fingerprint: a reused key always replays
};

struct Options {
  std::string key_header = "Idempotency-Key";
  bool key_required = true;  // false: a request without the header runs the handler in a plain transaction
  // The scope the key belongs to (e.g. the authenticated tenant). May throw
  // Reject (e.g. 401). Unset: method and path ("POST /payments").
  std::function<std::string(const httplib::Request&)> scope;
  FingerprintOf fingerprint = FingerprintOf::Request;
  // Response headers stored and replayed (case-insensitive). Empty: every
  // header the handler set except Date and hop-by-hop ones; Set-Cookie is
  // stored and replayed, as the Node middleware does (scope the keys per user
  // when the cookies are a user's, or list the headers to keep here).
  std::vector<std::string> replay_headers;
  ClaimOptions claim;  // ttl, lease, wait (its fingerprint is ignored)
  // Backpressure: the longest a request waits for a free pooled connection;
  // then 503 {"error": "database_busy"} with Retry-After: busy_retry_after
  // (whole seconds, at least 1). Nothing was claimed: the client retries
  // with the same key.
  std::chrono::milliseconds pool_wait = std::chrono::seconds(2);
  std::chrono::seconds busy_retry_after = std::chrono::seconds(1);
  // Told about every request (see <idempotency/observer.hpp>); none: nothing is measured.
  std::shared_ptr<Observer> observer;
};

// The route's business logic: runs inside the transaction that holds the key,
// on conn; its writes commit or roll back with the key. It must not end the
// transaction, and answers through res (set_content; no content providers).
using Handler = std::function<void(const httplib::Request& req, httplib::Response& res, PGconn* conn)>;

// Thrown by a handler (or the scope callback) to answer without storing
// anything: the work and the claim are rolled back, the key is free again.
class Reject : public std::runtime_error {
 public:
  Reject(int status, std::string_view code, std::string_view message)
      : std::runtime_error(std::string(message)), reply(error_reply(status, code, message)) {}
  HttpReply reply;
};

namespace detail {

// Writes an HttpReply (from to_http / error_reply) into an httplib response.
inline void send(httplib::Response& res, const HttpReply& reply) {
  res.status = reply.status;
  res.headers.clear();
  for (const auto& [name, value] : reply.headers) res.set_header(name.c_str(), value);
  res.body = reply.body;
}

inline bool is_json_content_type(const httplib::Request& req) {
  std::string type = req.get_header_value("Content-Type");
  type = type.substr(0, type.find(';'));
  for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  return type == "application/json" || (type.size() > 5 && type.compare(type.size() - 5, 5, "+json") == 0);
}

inline std::string hex(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// The JSON document whose idempotency.fingerprint() is the request's. A JSON
// body goes in as a value, so that key order and white space do not count:
// ["POST", "/payments", <body>]; any other body as hex of its bytes:
// {"method":"POST","path":"/payments","body_hex":"..."}. An empty body is no
// body, whatever its Content-Type: the second form with "body_hex":"" (and
// JSON null for FingerprintOf::JsonBody). These are byte for byte the
// documents node-client/lib/fingerprint.js builds, so a key moves between the
// services (Python's fingerprint alike: jsonb ignores the spacing).
inline std::string fingerprint_document(const httplib::Request& req, FingerprintOf what) {
  if (what == FingerprintOf::JsonBody) return req.body.empty() ? "null" : req.body;
  if (!req.body.empty() && is_json_content_type(req)) {
    return "[" + json_quote(req.method) + ", " + json_quote(req.path) + ", " + req.body + "]";
  }
  return "{\"method\":" + json_quote(req.method) + ",\"path\":" + json_quote(req.path) + ",\"body_hex\":\"" +
         hex(req.body) + "\"}";
}

inline bool is_default_skipped(const std::string& name) {
  for (const char* skip : {"Content-Length", "Connection", "Keep-Alive", "Transfer-Encoding", "Date",
                           "Idempotent-Replayed"}) {
    if (strcasecmp(name.c_str(), skip) == 0) return true;
  }
  return false;
}

// The handler's headers to replay, as the JSON object finish() stores, in the
// Node middleware's shape: a header sent once is a string, one sent several
// times (two Set-Cookie lines, two Link lines) an array of its values, under
// the name as first sent; parse_headers_json() replays it as that many lines.
// (Not joined with commas: Set-Cookie cannot be, RFC 6265.)
inline std::string stored_headers(const httplib::Response& res, const Options& o) {
  std::vector<std::pair<std::string, std::vector<std::string>>> kept;
  for (const auto& [name, value] : res.headers) {
    bool keep = o.replay_headers.empty() ? !is_default_skipped(name) : false;
    for (const auto& wanted : o.replay_headers) keep = keep || strcasecmp(wanted.c_str(), name.c_str()) == 0;
    if (!keep) continue;
    auto same = std::find_if(kept.begin(), kept.end(),
                             [&](const auto& k) { return strcasecmp(k.first.c_str(), name.c_str()) == 0; });
    if (same == kept.end()) {
      kept.emplace_back(name, std::vector<std::string>{value});
    } else {
      same->second.push_back(value);
    }
  }
  if (kept.empty()) return std::string();
  std::string json = "{";
  for (const auto& [n, values] : kept) {
    json += (json.size() > 1 ? ", " : "") + json_quote(n) + ": ";
    if (values.size() == 1) {
      json += json_quote(values.front());
      continue;
    }
    json += "[";
    for (std::size_t i = 0; i < values.size(); ++i) json += (i ? ", " : "") + json_quote(values[i]);
    json += "]";
  }
  return json + "}";
}

// A statement the Client has no call for (BEGIN / COMMIT / ROLLBACK).
inline void exec(PGconn* conn, const char* sql) {
  PGresult* r = PQexec(conn, sql);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  std::string state =
      ok ? "" : (PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : "");
  std::string message = ok ? "" : PQerrorMessage(conn);
  PQclear(r);
  if (ok) return;
  if (PQstatus(conn) != CONNECTION_OK || state.empty()) state = "08006";
  throw Error(state, std::string("idempotency: ") + sql + " failed: " + message);
}

// The handler answered with a server error: roll back, send its answer as is.
struct HandlerFailed {};

}  // namespace detail

class Middleware {
 public:
  explicit Middleware(ConnectionPool& pool, Options defaults = {}) : pool_(pool), defaults_(std::move(defaults)) {}

  // The handler behind Idempotency-Key handling, with the default options or a route's own.
  httplib::Server::Handler wrap(Handler handler) const { return wrap(defaults_, std::move(handler)); }
  httplib::Server::Handler wrap(Options options, Handler handler) const {
    return [this, options = std::move(options), handler = std::move(handler)](
               const httplib::Request& req, httplib::Response& res) {
      detail::ObservedRequest seen(options.observer.get(), req, res);
      serve(options, handler, req, res, seen);
    };
  }
  // The handler in a plain transaction on a pooled connection, no key involved
  // (the same error handling): for routes that need no idempotency.
  httplib::Server::Handler transaction(Handler handler) const {
    Options options = defaults_;
    options.key_required = false;
    options.key_header.clear();  // never present
    return wrap(std::move(options), std::move(handler));
  }

  const Options& defaults() const noexcept { return defaults_; }

 private:
  void serve(const Options& o, const Handler& handler, const httplib::Request& req, httplib::Response& res,
             detail::ObservedRequest& seen) const {
    std::optional<std::string> key;
    if (!o.key_header.empty() && req.has_header(o.key_header.c_str())) key = req.get_header_value(o.key_header.c_str());
    if ((key && !valid_key(*key)) || (!key && o.key_required)) {
      seen.rejected();
      return detail::send(res, error_reply(400, "missing_idempotency_key",
                                           "this endpoint requires an " + o.key_header + " header of 1 to 255 bytes"));
    }
    std::optional<ConnectionPool::Lease> lease;
    bool in_handler = false;
    try {
      const std::string scope = !key ? std::string() : o.scope ? o.scope(req) : req.method + " " + req.path;
      if (key) seen.key(*key, scope);
      lease.emplace(pool_.acquire(o.pool_wait));
      Client& client = **lease;
      auto run = [&](PGconn* conn) {
        in_handler = true;
        handler(req, res, conn);
        in_handler = false;
        if (res.status == -1) res.status = 200;
        if (res.status >= 500) throw detail::HandlerFailed{};
        return Response{res.status, res.body, detail::stored_headers(res, o)};
      };
      if (!key) {  // optional key, none given: the handler alone, in a transaction
        detail::exec(client.connection(), "BEGIN");
        try {
          run(client.connection());
        } catch (...) {
          try {
            detail::exec(client.connection(), "ROLLBACK");
          } catch (...) {
          }
          throw;
        }
        detail::exec(client.connection(), "COMMIT");
        return;
      }
      ClaimOptions claim = o.claim;
      claim.fingerprint.reset();  // the fingerprint is the request's (or none), never a fixed one
      seen.before_claim(claim);
      ClaimResult r =
          o.fingerprint == FingerprintOf::Nothing
              ? client.execute(scope, *key, claim, run)
              : client.execute_json(scope, *key, detail::fingerprint_document(req, o.fingerprint), run, claim);
      seen.answered(r, client);
      if (r.outcome != Outcome::Claimed) detail::send(res, to_http(r));  // the handler did not run
    } catch (const Reject& e) {
      seen.rejected();
      detail::send(res, e.reply);
    } catch (const PoolExhausted& e) {
      detail::send(res, busy(o, e.what()));
    } catch (const detail::HandlerFailed&) {
      if (lost(lease)) detail::send(res, unavailable("the connection broke while rolling back"));
      // otherwise res holds the handler's own 5xx answer; nothing was stored.
    } catch (const Error& e) {
      const std::string& state = e.sqlstate();
      seen.failed(state);
      if (e.connection_error() || lost(lease)) {
        detail::send(res, unavailable(e.what()));
      } else if (!in_handler && (state == "22P02" || state == "22P05" || state == "22021")) {
        // jsonb refused the fingerprint's document (malformed JSON, \u0000, bad UTF-8): nothing was claimed.
        seen.rejected();
        detail::send(res,
                     error_reply(400, "malformed_json", std::string("the request is not valid JSON: ") + e.what()));
      } else {
        detail::send(res, error_reply(500, "database_error", state + ": " + e.what()));
      }
    } catch (const std::exception& e) {
      detail::send(res, lost(lease) ? unavailable(e.what()) : error_reply(500, "internal_error", e.what()));
    } catch (...) {
      detail::send(res, lost(lease) ? unavailable("the handler failed")
                                    : error_reply(500, "internal_error", "the handler failed"));
    }
  }

  // Is the request's connection gone? Then it is closed instead of pooled.
  static bool lost(std::optional<ConnectionPool::Lease>& lease) {
    if (!lease || PQstatus(lease->connection()) == CONNECTION_OK) return false;
    lease->discard();
    return true;
  }
  static HttpReply unavailable(const std::string& why) {
    HttpReply r = error_reply(503, "database_unavailable", "the database connection was lost; retry the request: " + why);
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  static HttpReply busy(const Options& o, const std::string& why) {
    HttpReply r = error_reply(503, "database_busy", "the service is busy; retry the request later: " + why);
    r.headers.emplace_back("Retry-After", std::to_string(std::max<long long>(1, o.busy_retry_after.count())));
    return r;
  }

  ConnectionPool& pool_;
  Options defaults_;
};

}  // namespace idempotency::http
