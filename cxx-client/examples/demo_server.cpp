// idempotency-demo-server: a payment endpoint that honours Idempotency-Key
// (IETF draft / Stripe style), built on pg_idempotency's cpp-httplib middleware.
//
//   idempotency-demo-server --listen 127.0.0.1:8080 --db "dbname=app" [--pooler]
//
//   POST /payments   Idempotency-Key: <1-255 bytes>
//                    {"amount": 100, "currency": "EUR", "delay_ms": 0}
//   GET  /payments/count
//
// The middleware (<idempotency/httplib.hpp>) does the key, the fingerprint,
// claim, replay, 409/422/400/503 and storing the response; the route below is
// the business logic alone, run in the transaction that holds the key.
#include <signal.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "idempotency/client.hpp"
#include "idempotency/httplib.hpp"
#include "demo_telemetry.hpp"

using idempotency::http::Reject;
using nlohmann::json;

namespace {

std::string g_conninfo;
idempotency::ClientOptions g_client_options;  // --pooler: ClientOptions::pooler

// The one place that says how the service connects to the database.
std::unique_ptr<idempotency::Client> connect_db() {
  return std::make_unique<idempotency::Client>(g_conninfo, g_client_options);
}

void exec_or_die(PGconn* conn, const char* sql) {
  PGresult* r = PQexec(conn, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    std::cerr << "idempotency-demo-server: setup failed: " << PQresultErrorMessage(r);
    std::exit(1);
  }
  PQclear(r);
}

void setup_schema() {
  std::unique_ptr<idempotency::Client> db;
  try {
    db = connect_db();
  } catch (const idempotency::Error& e) {
    std::cerr << "idempotency-demo-server: cannot connect: " << e.what() << "\n";
    std::exit(1);
  }
  PGconn* conn = db->connection();
  exec_or_die(conn, "SET client_min_messages = warning");
  exec_or_die(conn, "CREATE EXTENSION IF NOT EXISTS pg_idempotency");
  exec_or_die(conn, "CREATE SCHEMA IF NOT EXISTS demo");
  exec_or_die(conn,
              "CREATE TABLE IF NOT EXISTS demo.payments ("
              " id bigserial PRIMARY KEY,"
              " idempotency_key text NOT NULL,"
              " amount bigint NOT NULL,"
              " currency text NOT NULL,"
              " created_at timestamptz NOT NULL DEFAULT now())");
}

// Throws the statement's error; the middleware rolls back and answers.
PGresult* checked(PGresult* r) {
  if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK) return r;
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  idempotency::Error e(state ? state : "08006", PQresultErrorMessage(r));
  PQclear(r);
  throw e;
}

// POST /payments: the business logic alone. It runs inside the transaction
// that holds the key (the middleware passes its connection).
void create_payment(const httplib::Request& req, httplib::Response& res, PGconn* conn) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    throw Reject(400, "malformed_json", "the request body is not a JSON object");
  }
  if (!body.contains("amount") || !body["amount"].is_number_integer() || !body.contains("currency") ||
      !body["currency"].is_string() || (body.contains("delay_ms") && !body["delay_ms"].is_number_integer())) {
    throw Reject(400, "invalid_request", "expected {\"amount\": <int>, \"currency\": \"<str>\"}");
  }
  const long long amount = body["amount"].get<long long>();
  const std::string currency = body["currency"].get<std::string>();
  const long long delay_ms = body.value("delay_ms", 0LL);
  if (delay_ms < 0 || delay_ms > 60000) throw Reject(400, "invalid_request", "delay_ms must be between 0 and 60000");

  if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  const std::string amount_text = std::to_string(amount);
  const std::string key = req.get_header_value("Idempotency-Key");
  const char* params[3] = {amount_text.c_str(), currency.c_str(), key.c_str()};
  PGresult* r = checked(PQexecParams(conn,
                                     "INSERT INTO demo.payments (amount, currency, idempotency_key) "
                                     "VALUES ($1::bigint, $2, $3) RETURNING id",
                                     3, nullptr, params, nullptr, nullptr, 0));
  const long long id = std::atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  res.status = 201;
  res.set_content(json{{"id", id}, {"amount", amount}, {"currency", currency}}.dump(), "application/json");
}

// GET /payments/count
void count_payments(const httplib::Request&, httplib::Response& res, PGconn* conn) {
  PGresult* r = checked(PQexec(conn, "SELECT count(*) FROM demo.payments"));
  const long long n = std::atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  res.set_content(json{{"count", n}}.dump(), "application/json");
}

[[noreturn]] void usage() {
  std::cerr << "usage: idempotency-demo-server --listen HOST:PORT --db CONNINFO [--threads N]\n"
               "         [--keep-alive REQUESTS] [--bench-routes] [--pooler] [--telemetry on|off]\n"
               "  --keep-alive     requests per HTTP connection (default 1: one per connection)\n"
               "  --bench-routes   also serve POST /bench/payments-plain: the same payment without\n"
               "                   the idempotency calls (bench/http/run compares the two)\n"
               "  --pooler         --db is a transaction pooler (PgBouncer pool_mode = transaction):\n"
               "                   unnamed statements only, nothing kept between transactions\n"
               "  --telemetry off  no observer at all (default on: outcomes in the log lines and, where\n"
               "                   built with OpenTelemetry, spans: OTEL_TRACES_EXPORTER=console prints them)\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8080";
  int threads = 32;
  int keep_alive = 1;
  bool bench_routes = false;
  bool telemetry = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--listen" && i + 1 < argc)
      listen = argv[++i];
    else if (a == "--db" && i + 1 < argc)
      g_conninfo = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (a == "--keep-alive" && i + 1 < argc)
      keep_alive = std::atoi(argv[++i]);
    else if (a == "--bench-routes")
      bench_routes = true;
    else if (a == "--pooler")
      g_client_options.pooler = true;
    else if (a == "--telemetry" && i + 1 < argc)
      telemetry = std::string(argv[++i]) != "off";
    else
      usage();
  }
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || threads < 1 || keep_alive < 1) usage();
  const std::string host = listen.substr(0, colon);
  const int port = std::atoi(listen.c_str() + colon + 1);

  setup_schema();
  demo::Telemetry sdk;  // before any observer: it sets the global providers
  const auto observer = sdk.observer(telemetry);
  g_client_options.observer = observer;

  // SIGINT/SIGTERM stop the server cleanly (handled on a thread of our own).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  httplib::Server server;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_keep_alive_max_count(static_cast<size_t>(keep_alive));
  // Headers and body go out in separate writes: without TCP_NODELAY a kept-alive
  // connection waits for the client's delayed ACK (~40 ms) on every answer.
  server.set_tcp_nodelay(true);

  // One connection per server thread at most, made on first use and again after a loss.
  idempotency::http::ConnectionPool pool(connect_db, static_cast<std::size_t>(threads));
  idempotency::http::Options options;
  options.scope = [](const httplib::Request&) { return std::string("payments"); };
  options.fingerprint = idempotency::http::FingerprintOf::JsonBody;  // idempotency.fingerprint(body)
  options.observer = observer;
  idempotency::http::Middleware idempotent(pool, options);
  server.Post("/payments", idempotent.wrap(create_payment));
  server.Get("/payments/count", idempotent.transaction(count_payments));
  // The baseline of bench/http: the same business logic in a plain transaction.
  if (bench_routes) server.Post("/bench/payments-plain", idempotent.transaction(create_payment));
  server.set_logger(demo::log_request);  // one JSON object a line, with trace_id

  std::thread stopper([&server, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    server.stop();
  });
  stopper.detach();

  // httplib listens with a backlog of 5, which drops connections under a burst
  // of parallel requests: remember the socket and listen again with a larger one.
  int listen_fd = -1;
  server.set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;
  });
  if (!server.bind_to_port(host, port)) {
    std::cerr << "idempotency-demo-server: cannot listen on " << listen << "\n";
    return 1;
  }
  if (listen_fd >= 0) ::listen(listen_fd, 1024);
  std::printf("{\"level\": \"info\", \"msg\": \"idempotency-demo-server listening on %s:%d\", \"opentelemetry\": %s}\n",
              host.c_str(), port, demo::Telemetry::built_with_opentelemetry() ? "true" : "false");
  std::fflush(stdout);
  const bool ok = server.listen_after_bind();
  g_client_options.observer.reset();
  return ok ? 0 : 1;
}
