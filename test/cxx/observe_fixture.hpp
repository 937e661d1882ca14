// What the observer tests (observer_test.cpp, opentelemetry_test.cpp) share: a
// real payment service (cpp-httplib + the middleware, on loopback in this
// process) against a real PostgreSQL server (libpq's PG* environment; database
// idempotency_cxx_test, or IDEMPOTENCY_TEST_DB), with an observer.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "idempotency/httplib.hpp"
#include "db_fixture.hpp"
#include "test_env.hpp"

namespace observe_fixture {

using namespace std::chrono_literals;
namespace http = idempotency::http;

using db_fixture::sql;
using db_fixture::unique;

// The test database with the extension and the payments table.
class Env : public db_fixture::Env {
 public:
  Env() : db_fixture::Env("CREATE TABLE IF NOT EXISTS observed_payments (key text NOT NULL, amount text NOT NULL)") {}
};

inline int payments(const std::string& key) {
  return std::stoi(sql("SELECT count(*) FROM observed_payments WHERE key = $1", {key}));
}

// POST /payments: one row per run in the key's transaction, 201. ?delay_ms=N
// sleeps after the insert (and sets handler_running first), ?status=N answers
// N, ?reject=1 throws Reject.
class PaymentService {
 public:
  explicit PaymentService(std::shared_ptr<idempotency::Observer> observer)
      : pool_([observer] {
          auto o = test_env::test_options();
          o.observer = observer;
          return std::make_unique<idempotency::Client>(test_env::conninfo(), o);
        },
              8),
        idem_(pool_, options(observer)) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(8); };
    server_.Post("/payments", idem_.wrap([this](const httplib::Request& req, httplib::Response& res, PGconn* conn) {
      if (req.has_param("reject")) throw http::Reject(400, "invalid_request", "rejected by the handler");
      const std::string key = req.get_header_value("Idempotency-Key");
      const char* params[2] = {key.c_str(), req.body.c_str()};
      PGresult* r = PQexecParams(conn, "INSERT INTO observed_payments (key, amount) VALUES ($1, $2)", 2, nullptr,
                                 params, nullptr, nullptr, 0);
      const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
      PQclear(r);
      if (!ok) throw std::runtime_error("insert failed");
      if (req.has_param("delay_ms")) {
        handler_running = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(req.get_param_value("delay_ms"))));
      }
      res.status = req.has_param("status") ? std::stoi(req.get_param_value("status")) : 201;
      res.set_content(R"({"payment": "done"})", "application/json");
    }));
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~PaymentService() {
    server_.stop();
    thread_.join();
  }
  PaymentService(const PaymentService&) = delete;
  PaymentService& operator=(const PaymentService&) = delete;

  httplib::Result pay(const std::string& key, const std::string& body, const std::string& query = "",
                      const httplib::Headers& extra = {}) {
    httplib::Client cli("127.0.0.1", port_);
    cli.set_read_timeout(30s);
    httplib::Headers h = extra;
    if (!key.empty()) h.emplace("Idempotency-Key", key);
    return cli.Post(("/payments" + query).c_str(), h, body, "application/json");
  }

  // Waits (at most 20 s) until a ?delay_ms handler is running.
  bool wait_for_handler() {
    for (int i = 0; i < 2000 && !handler_running; ++i) std::this_thread::sleep_for(10ms);
    return handler_running;
  }

  std::atomic<bool> handler_running{false};

 private:
  static http::Options options(std::shared_ptr<idempotency::Observer> observer) {
    http::Options o;
    o.scope = [](const httplib::Request&) { return std::string("tenant:observed"); };
    o.observer = std::move(observer);
    return o;
  }
  http::ConnectionPool pool_;
  http::Middleware idem_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace observe_fixture
