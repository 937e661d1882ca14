// Time per Client::execute() (and per claim()) in the client's four ways of
// talking to the server, side by side in one run, interleaved round by round:
//
//   prepared, sequential   named statements, one round trip per statement (the 1.0 path)
//   prepared, pipelined    named statements, BEGIN + claim and finish + COMMIT pipelined
//   unnamed, sequential    ClientOptions::pooler: unnamed statements, one round trip each
//   unnamed, pipelined     ClientOptions::pooler with pipelining (the pooler default)
//
//   execute_modes [--rounds N] [--calls N] CONNINFO [POOLED_CONNINFO]
//
// CONNINFO is a direct connection; POOLED_CONNINFO (optional) goes through a
// transaction pooler such as PgBouncer, where only the unnamed modes work.
// Workloads: "new key" = execute() of a fresh key whose handler does no SQL
// (BEGIN, claim, finish, COMMIT), "replay" = execute() of a completed key
// (BEGIN, claim, COMMIT), "claim" = a bare claim() replay (one statement).
// Each round's figure is the median of its calls' latencies (a busy machine's
// scheduling stalls hit single calls, which a mean would smear over all);
// prints the median over the rounds (and min-max) in microseconds per call and
// the ratio of each median to "prepared, sequential, direct"; for the direct
// connection also the server process's CPU time per call (from /proc, so the
// benchmark must run on the server's machine), which a busy machine disturbs
// far less than wall time.
#include <idempotency/client.hpp>
#include <libpq-fe.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using idempotency::Client;
using idempotency::ClientOptions;
using idempotency::Response;
using SteadyClock = std::chrono::steady_clock;

struct Mode {
  std::string name;
  bool pooler, pipeline, pooled_connection;
};

enum Workload { kNewKey, kReplay, kClaim, kWorkloads };
const char* const kWorkloadNames[kWorkloads] = {"new key", "replay", "claim"};

// utime + stime of a process in microseconds; NaN when unreadable.
double process_cpu_us(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (pid <= 0 || close == std::string::npos) return std::nan("");
  std::istringstream fields(stat.substr(close + 2));  // from field 3 (state) on
  std::string v;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> v; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(v);
  }
  return ticks * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double run(Client& client, Workload w, const std::string& scope, int round, int calls) {
  const auto handler = [](PGconn*) { return Response{201, R"({"id":1,"amount":100,"currency":"EUR"})", ""}; };
  std::vector<double> each;  // microseconds per call
  each.reserve(static_cast<std::size_t>(calls));
  for (int i = 0; i < calls; ++i) {
    const auto start = SteadyClock::now();
    switch (w) {
      case kNewKey: {
        auto r = client.execute(scope, "r" + std::to_string(round) + "-" + std::to_string(i), std::nullopt, handler);
        if (!r.claimed()) std::abort();
        break;
      }
      case kReplay: {
        auto r = client.execute(scope, "replayed", std::nullopt, handler);
        if (!r.replayed()) std::abort();
        break;
      }
      case kClaim: {
        auto r = client.claim(scope, "replayed");
        if (!r.replayed()) std::abort();
        break;
      }
      default:
        break;
    }
    each.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count());
  }
  return median(std::move(each));
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 7, calls = 1000;
  std::vector<std::string> conninfos;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--calls") == 0 && i + 1 < argc) {
      calls = std::atoi(argv[++i]);
    } else {
      conninfos.push_back(argv[i]);
    }
  }
  if (conninfos.empty() || conninfos.size() > 2 || rounds < 1 || calls < 1) {
    std::fprintf(stderr, "usage: %s [--rounds N] [--calls N] CONNINFO [POOLED_CONNINFO]\n", argv[0]);
    return 2;
  }
  std::vector<Mode> modes = {{"prepared, sequential", false, false, false},
                             {"prepared, pipelined", false, true, false},
                             {"unnamed, sequential", true, false, false},
                             {"unnamed, pipelined", true, true, false}};
  if (conninfos.size() == 2) {
    modes.push_back({"unnamed, sequential, pooled", true, false, true});
    modes.push_back({"unnamed, pipelined, pooled", true, true, true});
  }
  try {
    const std::string run_id =
        std::to_string(getpid()) + ":" + std::to_string(SteadyClock::now().time_since_epoch().count());
    std::vector<std::unique_ptr<Client>> clients;
    for (std::size_t m = 0; m < modes.size(); ++m) {
      ClientOptions o;
      o.pooler = modes[m].pooler;
      o.pipeline = modes[m].pipeline;
      o.detect_pooler = false;  // a mode that falls over must show, not switch
      clients.push_back(std::make_unique<Client>(conninfos[modes[m].pooled_connection ? 1 : 0], o));
      const std::string scope = "bench-modes:" + run_id + ":" + std::to_string(m);
      auto r = clients[m]->claim(scope, "replayed");
      clients[m]->finish(scope, "replayed", *r.token, Response{201, "stored", ""});
    }
    // times[workload][mode] = per-round microseconds per call
    std::vector<std::vector<std::vector<double>>> times(kWorkloads, std::vector<std::vector<double>>(modes.size()));
    auto cpu = times;                       // server CPU us per call, direct connections only
    for (int w = 0; w < kWorkloads; ++w) {  // warm-up: statements prepared, caches filled
      for (std::size_t m = 0; m < modes.size(); ++m) {
        run(*clients[m], static_cast<Workload>(w), "bench-modes:" + run_id + ":" + std::to_string(m), -1, 100);
      }
    }
    for (int round = 0; round < rounds; ++round) {
      for (int w = 0; w < kWorkloads; ++w) {
        // Rotate the order so no mode always runs first after another workload.
        for (std::size_t i = 0; i < modes.size(); ++i) {
          const std::size_t m = (i + static_cast<std::size_t>(round)) % modes.size();
          const int pid = modes[m].pooled_connection ? 0 : PQbackendPID(clients[m]->connection());
          const double cpu_before = process_cpu_us(pid);
          times[w][m].push_back(run(*clients[m], static_cast<Workload>(w),
                                    "bench-modes:" + run_id + ":" + std::to_string(m), round, calls));
          if (pid > 0) cpu[w][m].push_back((process_cpu_us(pid) - cpu_before) / calls);
        }
      }
    }
    std::printf(
        "%d rounds x %d calls per mode and workload, interleaved; us per call: median over the rounds (min-max) of\n"
        "each round's median call\n",
        rounds, calls);
    std::printf("ratio = median / median of \"prepared, sequential\" on the direct connection (lower is faster);\n");
    std::printf("server cpu = the server process's CPU time per call, median over the rounds (direct only)\n\n");
    for (int w = 0; w < kWorkloads; ++w) {
      std::printf("%s\n", kWorkloadNames[w]);
      const double base = median(times[w][0]);
      for (std::size_t m = 0; m < modes.size(); ++m) {
        const auto& t = times[w][m];
        const double med = median(t);
        std::printf("  %-30s %8.1f us (%.1f-%.1f)  %.2fx", modes[m].name.c_str(), med,
                    *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()), med / base);
        if (!cpu[w][m].empty() && !std::isnan(median(cpu[w][m]))) {
          std::printf("   server cpu %5.1f us", median(cpu[w][m]));
        }
        std::printf("\n");
      }
    }
  } catch (const idempotency::Error& e) {
    std::fprintf(stderr, "execute_modes: %s: %s\n", e.sqlstate().c_str(), e.what());
    return 1;
  }
  return 0;
}
