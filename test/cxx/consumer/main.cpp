// Claims a key, finishes it, then sees the replay (connection from PG* env).
#include <idempotency/client.hpp>

#include <iostream>
#include <ctime>
#include <string>
#include <unistd.h>

int main() {
  try {
    idempotency::Client client("dbname=idempotency_cxx_test");
    const std::string scope = "consumer:" + std::to_string(getpid()) + ":" + std::to_string(time(nullptr));
    auto first = client.claim(scope, "k1");
    if (first.outcome != idempotency::Outcome::Claimed) return 1;
    client.finish(scope, "k1", *first.token, {200, "hello", ""});
    auto again = client.claim(scope, "k1");
    if (again.outcome != idempotency::Outcome::Replay || again.response->body != "hello") return 1;
    std::cout << "consumer ok: " << idempotency::to_string(again.outcome) << "\n";
    return 0;
  } catch (const idempotency::Error& e) {
    std::cerr << "consumer: " << e.sqlstate() << " " << e.what() << "\n";
    return 1;
  }
}
