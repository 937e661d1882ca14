// produce: publishes one payment message per business id, and some of them a
// second time, as a producer does that retries when it did not see its
// first publish acknowledged: half right away, half a few messages later.
#include <chrono>
#include <deque>
#include <iostream>
#include <thread>

#include "consumer.hpp"
#include "redis.hpp"

namespace demo {

namespace {
std::string business_id(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "pay-%06d", i);
  return buf;
}
}  // namespace

int produce(const Options& o) {
  Redis redis(o.redis_host, o.redis_port);
  redis.command({"DEL", done_key(o)});
  struct Retry {
    int id;
    int due;  // published after this many more first publishes
  };
  std::deque<Retry> retries;
  long long published = 0, twice = 0;
  auto publish = [&](int i, int attempt) {
    const std::string amount = std::to_string(100 * (1 + (i * 37) % 500));
    redis.command({"XADD", o.stream, "*", "id", business_id(i), "amount", amount, "attempt", std::to_string(attempt)});
    ++published;
  };
  for (int i = 0; i < o.count; ++i) {
    publish(i, 1);
    if (o.duplicate_every > 0 && i % o.duplicate_every == 0) {
      ++twice;
      retries.push_back({i, (i / o.duplicate_every) % 2 == 0 ? 0 : 3});
    }
    for (auto& r : retries) --r.due;
    while (!retries.empty() && retries.front().due < 0) {
      publish(retries.front().id, 2);
      retries.pop_front();
    }
    if (o.batch > 0 && (i + 1) % o.batch == 0 && o.pause_ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(o.pause_ms));
  }
  for (const auto& r : retries) publish(r.id, 2);
  redis.command({"SET", done_key(o), "1"});
  std::cout << "producer: published " << published << " messages for " << o.count << " business ids (" << twice
            << " of them twice, as a retrying producer does)\n";
  return 0;
}

}  // namespace demo
