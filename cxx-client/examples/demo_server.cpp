// idempotency-demo-server: a payment endpoint that honours Idempotency-Key
// (IETF draft / Stripe style) with pg_idempotency's C++ client.
//
//   idempotency-demo-server --listen 127.0.0.1:8080 --db "dbname=app"
//
//   POST /payments   Idempotency-Key: <1-255 bytes>
//                    {"amount": 100, "currency": "EUR", "delay_ms": 0}
//   GET  /payments/count
//
// The payment row and the idempotency key are written in one transaction by
// Client::execute(); to_http() turns the outcome into the HTTP answer.
#include <httplib.h>
#include <libpq-fe.h>
#include <signal.h>
#include <strings.h>
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

using nlohmann::json;

namespace {

std::string g_conninfo;
std::mutex g_log_mutex;

// One database connection per server thread (a Client is not thread-safe).
idempotency::Client& db() {
  thread_local std::unique_ptr<idempotency::Client> client;
  if (!client || PQstatus(client->connection()) != CONNECTION_OK) {
    client = std::make_unique<idempotency::Client>(g_conninfo);
  }
  return *client;
}

void send(httplib::Response& res, const idempotency::HttpReply& reply) {
  std::string content_type = "application/json";
  for (const auto& [name, value] : reply.headers) {
    if (strcasecmp(name.c_str(), "Content-Type") == 0) {
      content_type = value;
    } else {
      res.set_header(name.c_str(), value);
    }
  }
  res.status = reply.status;
  res.set_content(reply.body, content_type.c_str());
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
  PGconn* conn = PQconnectdb(g_conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::cerr << "idempotency-demo-server: cannot connect: " << PQerrorMessage(conn);
    std::exit(1);
  }
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
  PQfinish(conn);
}

// The whole business logic: insert the payment, answer 201 with it. It runs
// inside the transaction that holds the key (execute() passes the connection).
idempotency::Response create_payment(PGconn* conn, const std::string& key, long long amount,
                                     const std::string& currency, long long delay_ms) {
  if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  const std::string amount_text = std::to_string(amount);
  const char* params[3] = {amount_text.c_str(), currency.c_str(), key.c_str()};
  PGresult* r = PQexecParams(conn,
                             "INSERT INTO demo.payments (amount, currency, idempotency_key) "
                             "VALUES ($1::bigint, $2, $3) RETURNING id",
                             3, nullptr, params, nullptr, nullptr, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    idempotency::Error e(state ? state : "XX000", PQresultErrorMessage(r));
    PQclear(r);
    throw e;
  }
  const long long id = std::atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  json body = {{"id", id}, {"amount", amount}, {"currency", currency}};
  return idempotency::Response{201, body.dump(), R"({"Content-Type": "application/json"})"};
}

void post_payment(const httplib::Request& req, httplib::Response& res) {
  const std::string key = req.get_header_value("Idempotency-Key");
  if (!req.has_header("Idempotency-Key") || !idempotency::valid_key(key)) {
    return send(res, idempotency::missing_key_reply());
  }
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return send(res, idempotency::error_reply(400, "malformed_json", "the request body is not a JSON object"));
  }
  if (!body.contains("amount") || !body["amount"].is_number_integer() || !body.contains("currency") ||
      !body["currency"].is_string() || (body.contains("delay_ms") && !body["delay_ms"].is_number_integer())) {
    return send(
        res, idempotency::error_reply(400, "invalid_request", "expected {\"amount\": <int>, \"currency\": \"<str>\"}"));
  }
  const long long amount = body["amount"].get<long long>();
  const std::string currency = body["currency"].get<std::string>();
  const long long delay_ms = body.value("delay_ms", 0LL);
  if (delay_ms < 0 || delay_ms > 60000) {
    return send(res, idempotency::error_reply(400, "invalid_request", "delay_ms must be between 0 and 60000"));
  }

  try {
    // Fingerprint: idempotency.fingerprint(body), computed by the server in the claim.
    auto result = db().execute_json(
        "payments", key, req.body, [&](PGconn* conn) { return create_payment(conn, key, amount, currency, delay_ms); });
    send(res, idempotency::to_http(result));
  } catch (const idempotency::Error& e) {
    if (e.connection_error()) {
      send(res, idempotency::error_reply(503, "database_unavailable", e.what()));
    } else if (e.sqlstate().rfind("22", 0) == 0) {  // e.g. JSON that jsonb refuses (\u0000)
      send(res, idempotency::error_reply(400, "invalid_request", e.what()));
    } else {
      send(res, idempotency::error_reply(500, "database_error", std::string(e.sqlstate()) + ": " + e.what()));
    }
  }
}

void get_count(const httplib::Request&, httplib::Response& res) {
  PGresult* r = PQexec(db().connection(), "SELECT count(*) FROM demo.payments");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    send(res, idempotency::error_reply(500, "database_error", PQresultErrorMessage(r)));
  } else {
    json body = {{"count", std::atoll(PQgetvalue(r, 0, 0))}};
    res.set_content(body.dump(), "application/json");
  }
  PQclear(r);
}

[[noreturn]] void usage() {
  std::cerr << "usage: idempotency-demo-server --listen HOST:PORT --db CONNINFO [--threads N]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8080";
  int threads = 32;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--listen" && i + 1 < argc)
      listen = argv[++i];
    else if (a == "--db" && i + 1 < argc)
      g_conninfo = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else
      usage();
  }
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || threads < 1) usage();
  const std::string host = listen.substr(0, colon);
  const int port = std::atoi(listen.c_str() + colon + 1);

  setup_schema();

  // SIGINT/SIGTERM stop the server cleanly (handled on a thread of our own).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  httplib::Server server;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_keep_alive_max_count(1);
  server.Post("/payments", post_payment);
  server.Get("/payments/count", get_count);
  server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    std::printf("%s %s %d key=%s%s\n", req.method.c_str(), req.path.c_str(), res.status,
                req.has_header("Idempotency-Key") ? req.get_header_value("Idempotency-Key").c_str() : "-",
                res.has_header("Idempotent-Replayed") ? " replayed" : "");
    std::fflush(stdout);
  });

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
  std::printf("idempotency-demo-server listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  return server.listen_after_bind() ? 0 : 1;
}
