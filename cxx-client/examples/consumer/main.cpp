// idempotency-demo-consumer MODE [options]: see consumer.hpp.
//   --redis HOST:PORT  --db CONNINFO  --stream NAME  --group NAME  --pooler
//   consume: --name NAME  --crash-after-commit N  --min-idle-ms MS  --wait-ms MS
//   produce: --count N  --duplicate-every N  --batch N  --pause-ms MS
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "consumer.hpp"

namespace {

int usage() {
  std::cerr << "usage: idempotency-demo-consumer setup|produce|consume|report --redis HOST:PORT --db CONNINFO\n"
               "         [--stream payments] [--group ledger] [--pooler]\n"
               "         consume: [--name NAME] [--crash-after-commit N] [--min-idle-ms MS] [--wait-ms MS]\n"
               "         produce: [--count N] [--duplicate-every N] [--batch N] [--pause-ms MS]\n";
  return 64;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string mode = argv[1];
  demo::Options o;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--pooler") {  // --db is a transaction pooler: unnamed statements only
      o.pooler = true;
      continue;
    }
    if (i + 1 >= argc) return usage();
    const std::string value = argv[++i];
    if (flag == "--redis") {
      const auto colon = value.rfind(':');
      if (colon == std::string::npos) return usage();
      o.redis_host = value.substr(0, colon);
      o.redis_port = std::atoi(value.c_str() + colon + 1);
    } else if (flag == "--db") {
      o.db = value;
    } else if (flag == "--stream") {
      o.stream = value;
    } else if (flag == "--group") {
      o.group = value;
    } else if (flag == "--name") {
      o.name = value;
    } else if (flag == "--count") {
      o.count = std::atoi(value.c_str());
    } else if (flag == "--duplicate-every") {
      o.duplicate_every = std::atoi(value.c_str());
    } else if (flag == "--batch") {
      o.batch = std::atoi(value.c_str());
    } else if (flag == "--pause-ms") {
      o.pause_ms = std::atoi(value.c_str());
    } else if (flag == "--crash-after-commit") {
      o.crash_after_commit = std::atoi(value.c_str());
    } else if (flag == "--min-idle-ms") {
      o.min_idle_ms = std::atoi(value.c_str());
    } else if (flag == "--wait-ms") {
      o.wait_ms = std::atoi(value.c_str());
    } else {
      return usage();
    }
  }
  try {
    if (mode == "setup") return demo::setup(o);
    if (mode == "produce") return demo::produce(o);
    if (mode == "consume") return demo::consume(o);
    if (mode == "report") return demo::report(o);
  } catch (const std::exception& e) {
    std::cerr << "idempotency-demo-consumer " << mode << ": " << e.what() << "\n";
    return 1;
  }
  return usage();
}
