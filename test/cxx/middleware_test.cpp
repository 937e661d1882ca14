// GoogleTest suite of the cpp-httplib middleware (<idempotency/httplib.hpp>):
// a real httplib server on loopback in this process, real HTTP requests, a
// real PostgreSQL server (libpq's PG* environment; database
// idempotency_cxx_test, or IDEMPOTENCY_TEST_DB).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "idempotency/httplib.hpp"
#include "db_fixture.hpp"
#include "test_env.hpp"

using namespace std::chrono_literals;
namespace http = idempotency::http;

using namespace test_env;

namespace {

using db_fixture::sql;
using db_fixture::unique;

[[maybe_unused]] auto* const g_env = ::testing::AddGlobalTestEnvironment(
    new db_fixture::Env("CREATE TABLE IF NOT EXISTS mw_work (scope text NOT NULL, key text NOT NULL, note text NOT NULL)"));

int rows(const std::string& key) { return std::stoi(sql("SELECT count(*) FROM mw_work WHERE key = $1", {key})); }

std::atomic<int> g_handler_backend{0};  // pg_backend_pid() of the last handler run

// Waits (at most 20 s) until a handler has run since g_handler_backend was reset.
bool handler_started() {
  for (int i = 0; i < 2000 && g_handler_backend == 0; ++i) std::this_thread::sleep_for(10ms);
  return g_handler_backend != 0;
}

std::atomic<bool> g_release_held{false};  // ends the handlers that ?hold=1 keeps on their connection
std::atomic<int> g_holding{0};             // handlers holding their connection (?hold=1) now

// The business logic of the test routes: one row per run, in the key's
// transaction. ?delay_ms=N sleeps after the insert, ?status=N answers N,
// ?reject=1 throws Reject, ?hold=1 keeps its connection until g_release_held
// (at most 20 s).
void work(const httplib::Request& req, httplib::Response& res, PGconn* conn) {
  if (req.has_param("reject")) throw http::Reject(400, "invalid_request", "rejected by the handler");
  PGresult* pid = PQexec(conn, "SELECT pg_backend_pid()");
  g_handler_backend = std::atoi(PQgetvalue(pid, 0, 0));
  PQclear(pid);
  if (req.has_param("hold")) {
    ++g_holding;
    for (int i = 0; !g_release_held && i < 2000; ++i) std::this_thread::sleep_for(10ms);
    --g_holding;
  }
  if (req.has_param("delay_ms"))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(req.get_param_value("delay_ms"))));
  const std::string key = req.get_header_value("Idempotency-Key"), scope = req.get_header_value("X-Tenant");
  const char* params[3] = {scope.c_str(), key.c_str(), req.body.c_str()};
  PGresult* r =
      PQexecParams(conn, "INSERT INTO mw_work (scope, key, note) VALUES ($1, $2, $3) RETURNING pg_backend_pid()", 3,
                   nullptr, params, nullptr, nullptr, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    idempotency::Error e(state ? state : "08006", PQresultErrorMessage(r));
    PQclear(r);
    throw e;
  }
  PQclear(r);
  res.status = req.has_param("status") ? std::stoi(req.get_param_value("status")) : 201;
  res.set_header("Location", "/work/" + key);
  res.set_header("X-Request-Time", std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  // Raw bytes, NULs and high bytes included, to check the replay byte for byte.
  std::string body =
      "created \x00\xff\x01 " + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  body[8] = '\0';
  res.set_content(body, "application/octet-stream");
}

// Two Set-Cookie lines (stored by default, as the Node middleware does), and
// the request's Content-Type echoed back so that a test can see what it sent.
void cookies(const httplib::Request& req, httplib::Response& res, PGconn*) {
  res.status = 201;
  res.set_header("Set-Cookie", "session=abc; Path=/; HttpOnly");
  res.set_header("Set-Cookie", "theme=dark; Path=/");
  res.set_header("X-Request-Content-Type", req.get_header_value("Content-Type"));
  res.set_content("cookies " + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()),
                  "text/plain");
}

// The values of every `name` line of a response, in order.
std::vector<std::string> header_lines(const httplib::Response& res, const std::string& name) {
  std::vector<std::string> out;
  auto [from, to] = res.headers.equal_range(name);
  for (auto it = from; it != to; ++it) out.push_back(it->second);
  return out;
}

// What node-client/lib/fingerprint.js's fingerprintDocument() gives for a
// request (method POST, `path`, `content_type`) with the body `hex` (raw bytes
// in hex; text: null, as the Express middleware passes for a non-JSON or empty
// body) in `mode`, run by node itself.
std::string node_fingerprint_document(const std::string& path, const std::string& content_type, const std::string& hex,
                                      const std::string& mode = "request") {
  std::string file = __FILE__;
  const std::string root = file.substr(0, file.rfind("test/cxx/"));
  const std::string script =
      "const f = require(process.argv[1]); const raw = Buffer.from(process.argv[5], \"hex\");"
      "process.stdout.write(f.fingerprintDocument({method: \"POST\", url: process.argv[2],"
      " headers: {\"content-type\": process.argv[3]}}, raw, null, process.argv[4]));";
  const std::string command = "node -e '" + script + "' '" + root + "node-client/lib/fingerprint.js' '" + path +
                              "' '" + content_type + "' '" + mode + "' '" + hex + "'";
  FILE* p = popen(command.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run node");
  std::string out;
  char buf[512];
  for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  if (pclose(p) != 0) throw std::runtime_error("node failed: " + command);
  return out;
}

// An httplib server on a free loopback port with the middleware's routes.
class Service {
 public:
  explicit Service(std::size_t pool_size = 8, http::ConnectionPool::Factory make = nullptr,
                   const std::function<void(http::Options&)>& adjust = nullptr)
      : pool_(
            make ? std::move(make) : [] { return std::make_unique<idempotency::Client>(conninfo(), test_options()); },
            pool_size),
        idem_(pool_, tenant_options(adjust)) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(16); };
    server_.Post("/work", idem_.wrap(work));
    server_.Post("/other", idem_.wrap(work));  // same scope (the tenant), another path
    http::Options optional = tenant_options();
    optional.key_required = false;
    server_.Post("/optional", idem_.wrap(optional, work));
    http::Options custom = tenant_options();
    custom.key_header = "X-Request-Id";
    custom.replay_headers = {"Location", "Content-Type"};
    server_.Post("/custom", idem_.wrap(custom, work));
    server_.Post("/plain", idem_.transaction(work));
    server_.Post("/cookies", idem_.wrap(cookies));
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // bind_to_any_port already listens: requests queue until the accept loop runs.
  }
  ~Service() {
    server_.stop();
    thread_.join();
  }
  httplib::Result post(const std::string& path, const std::string& key, const std::string& body,
                       const std::string& content_type = "application/json", const std::string& tenant = "t1",
                       const std::string& key_header = "Idempotency-Key") {
    httplib::Client cli("127.0.0.1", port_);
    cli.set_read_timeout(30s);
    httplib::Headers h;
    if (tenant != "-") h.emplace("X-Tenant", tenant);
    if (!key.empty()) h.emplace(key_header, key);
    if (key_header != "Idempotency-Key" && !key.empty()) h.emplace("Idempotency-Key", key);  // for work()'s row
    return cli.Post(path.c_str(), h, body, content_type.c_str());
  }

 private:
  // Scope: the tenant header; a request without one is refused with 401.
  static http::Options tenant_options(const std::function<void(http::Options&)>& adjust = nullptr) {
    http::Options o;
    if (adjust) adjust(o);
    o.scope = [](const httplib::Request& req) {
      if (!req.has_header("X-Tenant")) throw http::Reject(401, "unauthenticated", "no tenant");
      return "tenant:" + req.get_header_value("X-Tenant");
    };
    return o;
  }
  http::ConnectionPool pool_;
  http::Middleware idem_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

std::string error_code(const httplib::Result& r) {
  const auto at = r->body.find("\"error\": \"");
  return at == std::string::npos ? "<none>" : r->body.substr(at + 10, r->body.find('"', at + 10) - at - 10);
}

}  // namespace

TEST(Middleware, NewKeyThenReplayByteForByte) {
  Service s;
  const auto key = unique("k");
  auto first = s.post("/work", key, R"({"amount": 1})");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 201);
  EXPECT_FALSE(first->has_header("Idempotent-Replayed"));
  auto again = s.post("/work", key, R"({"amount": 1})");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 201);
  EXPECT_EQ(again->body, first->body);  // NUL and 0xff bytes included
  EXPECT_EQ(again->body.size(), first->body.size());
  EXPECT_EQ(again->get_header_value("Idempotent-Replayed"), "true");
  EXPECT_EQ(again->get_header_value("Content-Type"), "application/octet-stream");
  EXPECT_EQ(again->get_header_value("Location"), "/work/" + key);
  EXPECT_EQ(again->get_header_value("X-Request-Time"), first->get_header_value("X-Request-Time"));
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, ConcurrentDuplicatesRunTheHandlerOnce) {
  Service s(12);
  const auto key = unique("k");
  constexpr int kClients = 10;
  std::vector<int> status(kClients);
  std::vector<std::string> retry_after(kClients), replayed(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      auto r = s.post("/work?delay_ms=600", key, R"({"amount": 2})");
      if (!r) return;
      status[i] = r->status;
      retry_after[i] = r->get_header_value("Retry-After");
      replayed[i] = r->get_header_value("Idempotent-Replayed");
    });
  }
  for (auto& t : clients) t.join();
  int created = 0, conflicts = 0;
  for (int i = 0; i < kClients; ++i) {
    if (status[i] == 201 && replayed[i].empty()) ++created;
    if (status[i] == 409) {
      ++conflicts;
      EXPECT_GE(std::atoi(retry_after[i].c_str()), 1);
    }
    EXPECT_TRUE(status[i] == 201 || status[i] == 409) << status[i];
  }
  EXPECT_EQ(created, 1);
  EXPECT_GE(conflicts, 1);
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, InFlightDuplicateIs409WithRetryAfterAndJsonError) {
  Service s;
  const auto key = unique("k");
  g_handler_backend = 0;
  std::thread first([&] { s.post("/work?delay_ms=1500", key, "{}"); });
  const bool started = handler_started();  // the first request holds the key from now on
  auto dup = s.post("/work", key, "{}");
  first.join();
  ASSERT_TRUE(started) << "the first request never reached its handler";
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->status, 409);
  EXPECT_GE(std::atoi(dup->get_header_value("Retry-After").c_str()), 1);
  EXPECT_EQ(error_code(dup), "request_in_progress");
  EXPECT_EQ(dup->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, SameKeyOtherRequestIs422) {
  Service s;
  const auto key = unique("k");
  ASSERT_EQ(s.post("/work", key, R"({"amount": 3})")->status, 201);
  auto body = s.post("/work", key, R"({"amount": 4})");
  EXPECT_EQ(body->status, 422);
  EXPECT_EQ(error_code(body), "idempotency_key_reused");
  auto path = s.post("/other", key, R"({"amount": 3})");  // same scope and body, another path
  EXPECT_EQ(path->status, 422);
  auto raw = s.post("/work", key, R"({"amount": 3})", "text/plain");  // same text, not JSON any more
  EXPECT_EQ(raw->status, 422);
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, JsonBodiesCompareCanonicallyRawBodiesByBytes) {
  Service s;
  const auto key = unique("k");
  ASSERT_EQ(s.post("/work", key, R"({"amount": 5, "currency": "EUR"})")->status, 201);
  auto reordered = s.post("/work", key, "{\"currency\":\"EUR\",\n  \"amount\":5}");
  EXPECT_EQ(reordered->status, 201);
  EXPECT_EQ(reordered->get_header_value("Idempotent-Replayed"), "true");

  const auto raw_key = unique("raw");
  const std::string bytes("a\0b\xff", 4);
  ASSERT_EQ(s.post("/work", raw_key, bytes, "application/octet-stream")->status, 201);
  EXPECT_EQ(s.post("/work", raw_key, bytes, "application/octet-stream")->get_header_value("Idempotent-Replayed"),
            "true");
  EXPECT_EQ(s.post("/work", raw_key, std::string("a\0c\xff", 4), "application/octet-stream")->status, 422);
  EXPECT_EQ(rows(key) + rows(raw_key), 2);
}

TEST(Middleware, MissingOrInvalidKeyIs400) {
  Service s;
  auto none = s.post("/work", "", "{}");
  EXPECT_EQ(none->status, 400);
  EXPECT_EQ(error_code(none), "missing_idempotency_key");
  auto too_long = s.post("/work", std::string(256, 'k'), "{}");
  EXPECT_EQ(too_long->status, 400);
  EXPECT_EQ(rows(std::string(256, 'k')), 0);
}

TEST(Middleware, MalformedJsonIs400AndClaimsNothing) {
  Service s;
  const auto key = unique("k");
  auto r = s.post("/work", key, R"({"amount": )");
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(error_code(r), "malformed_json");
  EXPECT_TRUE(sql("SELECT 1 FROM idempotency.keys WHERE key = $1", {key}).empty());
  EXPECT_EQ(s.post("/work", key, R"({"amount": 6})")->status, 201);  // the key is still free
}

TEST(Middleware, CustomKeyHeaderAndReplayedHeaderList) {
  Service s;
  const auto key = unique("k");
  EXPECT_EQ(s.post("/custom", key, "{}", "application/json", "t1", "Idempotency-Key")->status, 400);  // wrong header
  auto first = s.post("/custom", key, "{}", "application/json", "t1", "X-Request-Id");
  EXPECT_EQ(first->status, 201);
  auto again = s.post("/custom", key, "{}", "application/json", "t1", "X-Request-Id");
  EXPECT_EQ(again->get_header_value("Idempotent-Replayed"), "true");
  EXPECT_EQ(again->get_header_value("Location"), "/work/" + key);
  EXPECT_FALSE(again->has_header("X-Request-Time"));  // not in replay_headers
  EXPECT_EQ(again->body, first->body);
}

TEST(Middleware, OptionalKeyRunsTheHandlerInAPlainTransactionWithoutOne) {
  Service s;
  const auto tenant = unique("t");
  EXPECT_EQ(s.post("/optional", "", "{}", "application/json", tenant)->status, 201);
  EXPECT_EQ(s.post("/optional", "", "{}", "application/json", tenant)->status, 201);
  EXPECT_EQ(std::stoi(sql("SELECT count(*) FROM mw_work WHERE scope = $1", {tenant})), 2);
  const auto key = unique("k");
  EXPECT_EQ(s.post("/optional", key, "{}", "application/json", tenant)->status, 201);
  EXPECT_EQ(s.post("/optional", key, "{}", "application/json", tenant)->get_header_value("Idempotent-Replayed"),
            "true");
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, ScopeFromCallback) {
  Service s;
  const auto key = unique("k");
  auto a = s.post("/work", key, "{}", "application/json", "alice");
  auto b = s.post("/work", key, "{}", "application/json", "bob");
  EXPECT_EQ(a->status, 201);
  EXPECT_EQ(b->status, 201);
  EXPECT_FALSE(b->has_header("Idempotent-Replayed"));  // keys never collide across scopes
  EXPECT_EQ(rows(key), 2);
  EXPECT_FALSE(sql("SELECT 1 FROM idempotency.keys WHERE scope = 'tenant:alice' AND key = $1", {key}).empty());
  // The callback refuses: its answer, nothing claimed.
  const auto refused = unique("k");
  auto r = s.post("/work", refused, "{}", "application/json", "-");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_code(r), "unauthenticated");
  EXPECT_TRUE(sql("SELECT 1 FROM idempotency.keys WHERE key = $1", {refused}).empty());
}

TEST(Middleware, RejectAndServerErrorsStoreNothing) {
  Service s;
  const auto key = unique("k");
  auto rejected = s.post("/work?reject=1", key, "{}");
  EXPECT_EQ(rejected->status, 400);
  EXPECT_EQ(error_code(rejected), "invalid_request");
  auto failed = s.post("/work?status=502", key, "{}");
  EXPECT_EQ(failed->status, 502);
  EXPECT_EQ(rows(key), 0);  // the 502's insert was rolled back with its claim
  EXPECT_TRUE(sql("SELECT 1 FROM idempotency.keys WHERE key = $1", {key}).empty());
  auto ok = s.post("/work", key, "{}");
  EXPECT_EQ(ok->status, 201);
  EXPECT_FALSE(ok->has_header("Idempotent-Replayed"));
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, LostConnectionIs503ThenTheRetryRecovers) {
  Service s(1);  // one connection: the retry must get a new one
  const auto key = unique("k");
  g_handler_backend = 0;
  std::thread killer([] {
    if (handler_started()) sql("SELECT pg_terminate_backend(" + std::to_string(g_handler_backend.load()) + ", 10000)");
  });
  auto lost = s.post("/work?delay_ms=800", key, "{}");
  killer.join();
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->status, 503);
  EXPECT_EQ(error_code(lost), "database_unavailable");
  EXPECT_EQ(rows(key), 0);  // the transaction died with its backend
  auto retry = s.post("/work", key, "{}");
  EXPECT_EQ(retry->status, 201);
  EXPECT_FALSE(retry->has_header("Idempotent-Replayed"));
  EXPECT_EQ(rows(key), 1);
}

TEST(Middleware, IdleConnectionTerminatedIsReplacedWithout503) {
  // Behind a pooler, idle server connections are the pooler's (and the one
  // terminating may be the one it picks): nothing of the client's to replace.
  if (test_options().pooler) GTEST_SKIP() << "direct connections only";
  Service s(1);
  const auto first = unique("k");
  ASSERT_EQ(s.post("/work", first, "{}")->status, 201);
  const int pid = g_handler_backend;
  sql("SELECT pg_terminate_backend(" + std::to_string(pid) + ", 10000)");  // waits until it has exited
  const auto second = unique("k");
  auto r = s.post("/work", second, "{}");
  EXPECT_EQ(r->status, 201);
  EXPECT_NE(g_handler_backend.load(), pid);
  EXPECT_EQ(rows(second), 1);
}

TEST(Middleware, DatabaseDownIs503) {
  Service s(2, [] { return std::make_unique<idempotency::Client>("host=127.0.0.1 port=1 connect_timeout=2"); });
  auto r = s.post("/work", unique("k"), "{}");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(error_code(r), "database_unavailable");
  auto plain = s.post("/plain", "", "{}");
  EXPECT_EQ(plain->status, 503);
}

TEST(Middleware, PoolOfOneServesConcurrentRequestsInTurn) {
  Service s(1);
  const auto a = unique("k"), b = unique("k");
  std::thread t([&] { EXPECT_EQ(s.post("/work?delay_ms=300", a, "{}")->status, 201); });
  EXPECT_EQ(s.post("/work?delay_ms=300", b, "{}")->status, 201);
  t.join();
  EXPECT_EQ(rows(a) + rows(b), 2);
}

// Backpressure: with every pooled connection busy, a request waits at most
// Options::pool_wait, then gets 503 database_busy with Retry-After, claiming
// nothing; once a connection is free again the same key goes through.
TEST(Middleware, ExhaustedPoolIs503WithRetryAfterAfterABoundedWait) {
  EXPECT_GT(http::Options{}.pool_wait.count(), 0);  // the default wait is bounded
  Service s(2, nullptr, [](http::Options& o) {
    o.pool_wait = 200ms;
    o.busy_retry_after = 3s;
  });
  g_release_held = false;
  g_holding = 0;
  const auto held1 = unique("k"), held2 = unique("k"), shed = unique("k");
  std::vector<std::thread> holders;
  std::atomic<int> holders_done{0};
  for (const auto& key : {held1, held2}) {
    holders.emplace_back([&, key] {
      auto r = s.post("/work?hold=1", key, "{}");
      EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
      ++holders_done;
    });
  }
  // Both connections are taken once two handlers hold one each.
  for (int i = 0; i < 2000 && g_holding < 2; ++i) std::this_thread::sleep_for(10ms);
  if (g_holding != 2) {
    g_release_held = true;
    for (auto& t : holders) t.join();
    FAIL() << "the two holding requests did not both reach their handlers";
  }
  auto busy = s.post("/work", shed, "{}");
  auto plain = s.post("/plain", "", "{}");
  EXPECT_EQ(holders_done.load(), 0) << "the holders must still hold their connections";
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503);
  EXPECT_EQ(error_code(busy), "database_busy");
  EXPECT_EQ(busy->get_header_value("Retry-After"), "3");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 503);
  EXPECT_EQ(error_code(plain), "database_busy");
  g_release_held = true;
  for (auto& t : holders) t.join();
  EXPECT_EQ(rows(shed), 0);
  EXPECT_EQ(sql("SELECT count(*) FROM idempotency.keys WHERE key = $1", {shed}), "0");  // nothing claimed
  auto retry = s.post("/work", shed, "{}");
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->status, 201);
  EXPECT_EQ(rows(shed), 1);
}

// The documents fingerprinted are the ones the Node example builds too, so a
// key moves between the two services without a false 422.
TEST(Middleware, FingerprintDocumentsAreTheDocumentedOnes) {
  Service s;
  const auto json_key = unique("k"), raw_key = unique("k");
  ASSERT_EQ(s.post("/work", json_key, R"({"x": [true, null]})")->status, 201);
  ASSERT_EQ(s.post("/work", raw_key, "hi", "text/plain")->status, 201);
  EXPECT_EQ(sql("SELECT fingerprint = idempotency.fingerprint('[\"POST\", \"/work\", {\"x\": [true, null]}]') "
                "FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1",
                {json_key}),
            "t");
  EXPECT_EQ(sql("SELECT fingerprint = idempotency.fingerprint("
                "'{\"method\": \"POST\", \"path\": \"/work\", \"body_hex\": \"6869\"}') "
                "FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1",
                {raw_key}),
            "t");
}

// A header the route sends twice is stored as a JSON array of its values (the
// Node middleware's shape) and replayed as two lines; Set-Cookie is stored by
// default, as in Node.
TEST(Middleware, TwoSetCookieLinesAreStoredAsAnArrayAndReplayedAsTwoLines) {
  Service s;
  const auto key = unique("k");
  auto first = s.post("/cookies", key, "{}");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 201);
  // cpp-httplib keeps the lines of one header name in its own order, which
  // differs between its versions (Debian 12's keeps them as set, 13's does
  // not): compare them as sets. Cookies of different names do not depend on it.
  const auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  const std::vector<std::string> sent = {"session=abc; Path=/; HttpOnly", "theme=dark; Path=/"};
  EXPECT_EQ(sorted(header_lines(*first, "Set-Cookie")), sent);
  EXPECT_EQ(sql("SELECT jsonb_typeof(response_headers -> 'Set-Cookie') || ' ' || "
                "(response_headers -> 'Set-Cookie' @> $2::jsonb AND jsonb_array_length(response_headers -> 'Set-Cookie') = 2) "
                "FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1",
                {key, R"(["session=abc; Path=/; HttpOnly", "theme=dark; Path=/"])"}),
            "array true");
  EXPECT_EQ(sql("SELECT jsonb_typeof(response_headers -> 'X-Request-Content-Type') FROM idempotency.keys "
                "WHERE scope = 'tenant:t1' AND key = $1",
                {key}),
            "string");  // a header sent once stays a string
  auto again = s.post("/cookies", key, "{}");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 201);
  EXPECT_EQ(again->get_header_value("Idempotent-Replayed"), "true");
  EXPECT_EQ(sorted(header_lines(*again, "Set-Cookie")), sent);
  EXPECT_EQ(again->body, first->body);
}

// A key completed by another language's middleware (written here through SQL
// as node-client stores it: claim with the request's fingerprint, finish with
// a JSON array for the repeated header) replays in C++ as repeated lines,
// not as 400 malformed_json.
TEST(Middleware, ArrayStoredByNodeReplaysAsRepeatedLines) {
  Service s;
  const auto key = unique("k");
  const std::string token = sql(
      "SELECT (idempotency.claim($1::text, $2::text, idempotency.fingerprint($3::jsonb))).token",
      {"tenant:t1", key, R"(["POST", "/work", {"amount": 5}])"});
  ASSERT_FALSE(token.empty());
  ASSERT_EQ(sql("SELECT idempotency.finish($1::text, $2::text, $3::int8, 201, convert_to('from node', 'UTF8'), $4::jsonb)",
                {"tenant:t1", key, token,
                 R"({"Content-Type": "text/plain", "Set-Cookie": ["a=1; Path=/", "b=2"], "Link": ["</x>; rel=next", "</y>; rel=prev"]})"}),
            "t");
  auto r = s.post("/work", key, R"({"amount": 5})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "from node");
  EXPECT_EQ(r->get_header_value("Idempotent-Replayed"), "true");
  EXPECT_EQ(header_lines(*r, "Set-Cookie"), (std::vector<std::string>{"a=1; Path=/", "b=2"}));
  EXPECT_EQ(header_lines(*r, "Link"), (std::vector<std::string>{"</x>; rel=next", "</y>; rel=prev"}));
  EXPECT_EQ(header_lines(*r, "Content-Type"), std::vector<std::string>{"text/plain"});
  EXPECT_EQ(rows(key), 0);  // the handler never ran
}

// An empty body is no body, whatever its Content-Type: under application/json
// it is not 400 malformed_json, and its fingerprint document is byte for byte
// the Node middleware's (so is the compact form of any non-JSON body).
TEST(Middleware, EmptyJsonBodyIsNoBodyAndFingerprintsAsNodeDoes) {
  // Node computes the reference documents; the chroots of other PostgreSQL
  // majors have no Node, the host's run has it.
  if (std::system("command -v node >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed here";
  Service s;
  const auto key = unique("k");
  auto first = s.post("/cookies", key, "", "application/json");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->get_header_value("X-Request-Content-Type"), "application/json");  // what the test names
  EXPECT_EQ(first->status, 201) << first->body;
  const std::string node_doc = node_fingerprint_document("/cookies", "application/json", "");
  EXPECT_EQ(node_doc, R"({"method":"POST","path":"/cookies","body_hex":""})");
  EXPECT_EQ(sql("SELECT fingerprint = idempotency.fingerprint($2::jsonb) FROM idempotency.keys "
                "WHERE scope = 'tenant:t1' AND key = $1",
                {key, node_doc}),
            "t");
  auto again = s.post("/cookies", key, "", "application/json");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->get_header_value("Idempotent-Replayed"), "true");

  httplib::Request req;
  req.method = "POST";
  req.path = "/cookies";
  req.set_header("Content-Type", "application/json");
  EXPECT_EQ(http::detail::fingerprint_document(req, http::FingerprintOf::Request), node_doc);
  EXPECT_EQ(http::detail::fingerprint_document(req, http::FingerprintOf::JsonBody),
            node_fingerprint_document("/cookies", "application/json", "", "json-body"));
  httplib::Request raw = req;
  raw.headers.clear();
  raw.set_header("Content-Type", "text/plain");
  raw.body = "hi\n";
  EXPECT_EQ(http::detail::fingerprint_document(raw, http::FingerprintOf::Request),
            node_fingerprint_document("/cookies", "text/plain", "68690a"));
}
