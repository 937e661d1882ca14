// idempotency-demo-consumer: an at-least-once Redis Streams consumer that
// applies each payment exactly once with idempotency.once(). Its modes:
//   setup    creates demo.ledger, demo.deliveries and the consumer group
//   produce  publishes payments, some twice (a retrying producer)
//   consume  one consumer of the group (several run at once)
//   report   counts published / distinct / delivered / applied and checks them
#pragma once

#include <string>

namespace demo {

struct Options {
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  std::string db;       // libpq conninfo
  bool pooler = false;  // --pooler: db is a transaction pooler (ClientOptions::pooler)
  std::string stream = "payments";
  std::string group = "ledger";
  std::string name = "consumer-1";  // consume: this consumer's name in the group
  int count = 1000;                 // produce: distinct business ids
  int duplicate_every = 10;         // produce: every n-th id is published twice
  int batch = 100;                  // produce: entries per burst
  int pause_ms = 20;                // produce: pause between bursts
  int crash_after_commit = 0;       // consume: SIGKILL itself after this many COMMITs, before XACK
  int min_idle_ms = 2000;           // consume: XAUTOCLAIM entries idle this long
  int wait_ms = 500;                // consume: once()'s wait for a concurrent delivery
};

// The key scope every consumer of the payments stream shares.
inline const char* kScope = "consumer:payments";
// Set by the producer when it has published everything.
inline std::string done_key(const Options& o) { return o.stream + ":producer-done"; }

int setup(const Options& o);
int produce(const Options& o);
int consume(const Options& o);
int report(const Options& o);

}  // namespace demo
