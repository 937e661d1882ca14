// The README's complete C++ example (kept compiling by the build; the text in
// README.md, "The C++ client", is a copy of this file).
#include <idempotency/client.hpp>
#include <libpq-fe.h>
#include <iostream>

int main() {
  idempotency::Client client("dbname=app");  // owns its connection; one Client per thread

  // The request as received: its key and body. The fingerprint is
  // idempotency.fingerprint(body), so key order and white space do not matter.
  const std::string key = "c6b1f2d0-order-42";
  const std::string body = R"({"amount": 100, "currency": "EUR"})";

  // BEGIN; claim; handler; finish; COMMIT -- or the stored answer, without running the handler.
  idempotency::ClaimResult result = client.execute_json("payments", key, body, [&](PGconn* conn) {
    // Runs inside the transaction that holds the key: this insert commits or
    // rolls back together with it. Throwing rolls everything back and rethrows.
    PGresult* r = PQexec(conn, "INSERT INTO payments (amount) VALUES (100) RETURNING id");
    std::string id = PQgetvalue(r, 0, 0);
    PQclear(r);
    return idempotency::Response{201, R"({"id": )" + id + "}", R"({"Content-Type": "application/json"})"};
  });

  // Map the outcome to what an HTTP endpoint answers.
  idempotency::HttpReply reply = idempotency::to_http(result);
  std::cout << reply.status << " " << reply.body << "\n";  // 201 {"id": 7}
  for (auto& [name, value] : reply.headers) std::cout << name << ": " << value << "\n";
  // replay: 201, the stored body, Idempotent-Replayed: true
  // in_progress: 409 with Retry-After; mismatch: 422; no key: missing_key_reply() is 400
}
