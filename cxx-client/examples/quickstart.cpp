// The README's complete C++ example (README.md, "The C++ client"): the
// doc-tests (scripts/suites/05-doctest.sh) check that the README's copy is this
// file, compile it and run it; the build compiles this one.
#include <idempotency/client.hpp>
#include <libpq-fe.h>
#include <iostream>
#include <stdexcept>
#include <string>

// The business write, on the connection of the transaction that holds the key.
// A failure throws: execute() then rolls back the insert and the claim together
// and rethrows, so nothing is stored and a retry runs the work again.
static std::string insert_payment(PGconn* conn) {
  PGresult* r = PQexec(conn, "INSERT INTO payments (user_id, amount, currency) VALUES (42, 100, 'EUR') RETURNING id");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("insert failed: " + message);
  }
  std::string id = PQgetvalue(r, 0, 0);
  PQclear(r);
  return id;
}

int main() {
  try {
    idempotency::Client client("dbname=app");  // owns its connection; one Client per thread

    // The request as received: its key and body. The fingerprint is
    // idempotency.fingerprint(body), so key order and white space do not matter.
    const std::string key = "c6b1f2d0-order-42";
    const std::string body = R"({"amount": 100, "currency": "EUR"})";

    // BEGIN; claim; handler; finish; COMMIT -- or the stored answer, without running the handler.
    idempotency::ClaimResult result = client.execute_json("payments", key, body, [&](PGconn* conn) {
      const std::string id = insert_payment(conn);
      return idempotency::Response{201, R"({"id": )" + id + "}", R"({"Content-Type": "application/json"})"};
    });

    // Map the outcome to what an HTTP endpoint answers.
    idempotency::HttpReply reply = idempotency::to_http(result);
    std::cout << reply.status << " " << reply.body << "\n";  // 201 {"id": 7}
    for (auto& [name, value] : reply.headers) std::cout << name << ": " << value << "\n";
    // replay: 201, the stored body, Idempotent-Replayed: true
    // in_progress: 409 with Retry-After; mismatch: 422; no key: missing_key_reply() is 400
    return 0;
  } catch (const idempotency::Error& e) {
    // A database error (e.sqlstate() says which). A lost connection (08xxx) tells
    // nothing about the key: answer 503 and let the client retry on a new connection.
    std::cerr << "database error " << e.sqlstate() << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    // The handler failed: its work and the claim were rolled back, nothing is
    // stored. Answer 500; the client's retry with the same key runs it again.
    std::cerr << "handler failed, nothing stored: " << e.what() << "\n";
    return 1;
  }
}
