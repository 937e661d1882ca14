// Exactly-once torture for pg_idempotency, over plain libpq.
//
//   torture setup                      creates schema torture (business rows, logs)
//   torture load [options]             N client threads, each its own connection,
//                                      send requests over a few hundred keys
//   torture multistep [options]        claim / external call / checkpoint / finish in
//                                      separate transactions, holders dying between steps
//
// Connection: the usual PG* environment variables (or --conninfo).
// Every request of `load`, in one transaction: claim; on `claimed` insert a
// business row; then at random finish + commit, roll back, release + commit,
// stall past the lease and then finish + commit, or commit the claim alone
// (an abandoned holder, taken over after the lease). Any error other than the
// documented outcomes is a failure. Acknowledged finishes and replays are
// logged to torture.seen at the end so that invariants.sql can check them
// (also after a crash: with --tolerate-disconnect a thread whose connection
// breaks stops quietly, and the log is written through a fresh connection).
#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  std::string conninfo;
  int clients = 16;
  long requests = 10000;
  int keys = 300;
  int window = 8;  // hot keys at any moment
  int passes = 3;  // sweeps of the window over the key space
  int lease_ms = 120;
  int stall_ms = 180;  // > lease
  unsigned seed = 1;
  bool tolerate_disconnect = false;
  std::string scope = "torture";
  int steps = 3;     // multistep
  int wait_pct = 0;  // share of claims that wait for a holder
  int wait_ms = 30;
  int ttl_ms = 0;    // 0: the default (24 h); short: keys expire and are swept mid-run
  int sweep_ms = 0;  // > 0: one more connection calls sweep(100) this often
  std::string isolation = "read committed";
};

std::atomic<long> next_request{0};
std::atomic<long> failures{0};
std::mutex out_mutex;

struct Counts {
  std::atomic<long> claimed{0}, replay{0}, in_progress{0}, mismatch{0}, takeovers{0};
  std::atomic<long> finished{0}, rolled_back{0}, released{0}, stalled{0}, abandoned{0};
  std::atomic<long> disconnects{0}, fenced{0}, deaths{0}, resumed{0}, steps_done{0}, serialization{0};
} counts;

// Client-side view of who holds which key (between a `claimed` answer and the
// moment the holder sends COMMIT/ROLLBACK): two holders at once is a violation.
// error_drops counts holds that ended because a statement failed: the server
// aborts the transaction (and frees the key) before the client learns of it.
struct KeySlot {
  std::atomic<int> count{0};
  std::atomic<long> error_drops{0};
};
std::vector<KeySlot>* holders = nullptr;

void Fail(const std::string& what) {
  failures++;
  std::lock_guard<std::mutex> lock(out_mutex);
  std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

class Disconnected : public std::exception {};
// A serialization failure (40001) under REPEATABLE READ / SERIALIZABLE: a
// documented outcome; the request is rolled back and counted.
class SerializationFailure : public std::exception {};

// Marks a key as held by this client until dropped (or destroyed).
struct Hold {
  KeySlot* slot = nullptr;
  void take(KeySlot& s, const std::string& key);
  void drop(bool by_error = false) {
    if (!slot) return;
    if (by_error) slot->error_drops++;
    slot->count--;
    slot = nullptr;
  }
  ~Hold() { drop(std::uncaught_exceptions() > 0); }
};
void Hold::take(KeySlot& s, const std::string& key) {
  const long errors_before = s.error_drops.load();
  if (s.count.fetch_add(1) != 0) {
    // Excused only if the other holder is about to learn that an error ended
    // its transaction (and so released the key) before this claim.
    bool excused = false;
    for (int i = 0; i < 200 && !excused; i++) {
      if (s.error_drops.load() != errors_before)
        excused = true;
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!excused) Fail("two holders at once for " + key);
  }
  slot = &s;
}

struct Result {
  PGresult* res = nullptr;
  explicit Result(PGresult* r) : res(r) {}
  ~Result() { PQclear(res); }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  bool ok() const {
    auto s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
  }
  std::string sqlstate() const {
    const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return s ? s : "";
  }
  std::string get(int col) const { return PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col); }
  bool null(int col) const { return PQgetisnull(res, 0, col); }
};

class Conn {
 public:
  Conn(const Options& o, bool tolerate) : tolerate_(tolerate) {
    c_ = PQconnectdb(o.conninfo.c_str());
    PQsetNoticeProcessor(
        c_, [](void*, const char*) {}, nullptr);
    if (PQstatus(c_) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(c_);
      PQfinish(c_);
      c_ = nullptr;
      if (tolerate_) throw Disconnected();
      Fail("connect: " + msg);
      std::exit(2);
    }
  }
  ~Conn() {
    if (c_) PQfinish(c_);
  }
  PGconn* raw() { return c_; }
  bool serializable_ok = false;
  // Runs a statement; a broken connection throws Disconnected.
  std::unique_ptr<Result> exec(const char* sql, std::vector<std::string> params = {}) {
    std::vector<const char*> values;
    for (auto& p : params) values.push_back(p.c_str());
    auto r = std::make_unique<Result>(
        PQexecParams(c_, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0));
    if (PQstatus(c_) != CONNECTION_OK) throw Disconnected();
    if (!r->ok() && r->sqlstate().rfind("57P", 0) == 0) throw Disconnected();  // admin shutdown
    if (!r->ok() && r->sqlstate().rfind("08", 0) == 0) throw Disconnected();
    // "server closed the connection unexpectedly" comes without a SQLSTATE and
    // sometimes before libpq marks the connection bad.
    if (!r->ok() && r->sqlstate().empty()) throw Disconnected();
    return r;
  }
  // A statement that must succeed.
  std::unique_ptr<Result> must(const char* sql, std::vector<std::string> params, const std::string& ctx) {
    auto r = exec(sql, std::move(params));
    if (!r->ok() && r->sqlstate() == "40001" && serializable_ok) {
      // The caller drops its hold on the key (while unwinding) and only then
      // rolls back: the other order would let another client claim the key
      // while this one still counts as its holder.
      throw SerializationFailure();
    }
    if (!r->ok()) {
      Fail(ctx + ": " + sql + ": [" + r->sqlstate() + "] " + PQresultErrorMessage(r->res));
      exec("ROLLBACK");
      return nullptr;
    }
    return r;
  }

 private:
  PGconn* c_ = nullptr;
  bool tolerate_;
};

std::string Fingerprint(const std::string& key, bool odd) {
  // A per-key request digest (hex, 32 bytes); "odd" requests send another.
  std::hash<std::string> h;
  char buf[80];
  std::snprintf(buf, sizeof buf, "%016zx%016zx%016zx%016zx", h(key), h(key + "#"), h(key + (odd ? "odd" : "ev")),
                h("fp" + key));
  return buf;
}

const char* kClaimSql =
    "SELECT outcome::text, token, attempt, recovery_point, response_status,"
    " encode(response_body, 'escape'), response_headers::text, expires_at"
    " FROM idempotency.claim($1, $2, decode($3, 'hex'), $6::interval, $4::interval, $5::interval)";

struct Seen {
  char kind;  // F finished (commit acknowledged), R replayed, S step done (multistep)
  std::string key;
  std::string value;
};

void LoadWorker(const Options& o, int id, std::vector<Seen>* seen) {
  std::mt19937_64 rng(o.seed * 1000003ULL + id);
  std::uniform_int_distribution<int> pct(0, 99);
  std::unique_ptr<Conn> conn;
  try {
    conn = std::make_unique<Conn>(o, o.tolerate_disconnect);
    conn->serializable_ok = o.isolation != "read committed";
  } catch (const Disconnected&) {
    counts.disconnects++;
    return;
  }
  const std::string lease = std::to_string(o.lease_ms) + " milliseconds";
  const std::string ttl = o.ttl_ms > 0 ? std::to_string(o.ttl_ms) + " milliseconds" : "24 hours";
  for (;;) {
    const long r = next_request++;
    if (r >= o.requests) break;
    // A window of hot keys sweeps the key space `passes` times, so that keys
    // abandoned in one pass are met again (and taken over) in the next.
    const int base = static_cast<int>((r * static_cast<long>(o.keys) * o.passes / o.requests) % o.keys);
    const int k = (base + std::uniform_int_distribution<int>(0, o.window - 1)(rng)) % o.keys;
    const std::string key = "k" + std::to_string(k);
    const bool odd = pct(rng) < 3;
    try {
      Hold hold;
      conn->must(("BEGIN ISOLATION LEVEL " + o.isolation).c_str(), {}, key);
      const std::string wait = pct(rng) < o.wait_pct ? std::to_string(o.wait_ms) + " milliseconds" : "0";
      auto c = conn->must(kClaimSql, {o.scope, key, Fingerprint(key, odd), lease, wait, ttl}, "claim " + key);
      if (!c) continue;
      const std::string outcome = c->get(0);
      if (outcome == "replay") {
        counts.replay++;
        if (c->get(4) != "201") Fail("replay of " + key + " has status " + c->get(4));
        seen->push_back({'R', key, c->get(5)});
        conn->must("COMMIT", {}, key);
        continue;
      }
      if (outcome == "in_progress" || outcome == "mismatch") {
        (outcome == "mismatch" ? counts.mismatch : counts.in_progress)++;
        if (!c->null(1)) Fail(outcome + " with a token for " + key);
        conn->must("COMMIT", {}, key);
        continue;
      }
      if (outcome != "claimed") {
        Fail("unknown outcome " + outcome);
        conn->exec("ROLLBACK");
        continue;
      }
      counts.claimed++;
      if (c->null(1)) Fail("claimed without a token for " + key);
      if (std::atoi(c->get(2).c_str()) > 1) counts.takeovers++;
      const std::string token = c->get(1);
      hold.take((*holders)[k], key);
      const int action = pct(rng);
      if (action < 15) {  // release: the operation failed before any side effect
        auto rel = conn->must("SELECT idempotency.release($1, $2, $3)", {o.scope, key, token}, "release " + key);
        hold.drop();
        if (!rel) continue;
        if (rel->get(0) != "t") Fail("release returned " + rel->get(0));
        conn->must("COMMIT", {}, key);
        counts.released++;
        continue;
      }
      if (action < 25) {  // abandon: commit the claim alone (a holder that died after claiming)
        hold.drop();
        conn->must("COMMIT", {}, key);
        counts.abandoned++;
        continue;
      }
      auto b = conn->must(
          "INSERT INTO torture.business (scope, key, token, claimed_at, expires_at)"
          " VALUES ($1, $2, $3, now(), $4) RETURNING id",
          {o.scope, key, token, c->get(7)}, "business " + key);
      if (!b) {
        hold.drop();
        continue;
      }
      const std::string business_id = b->get(0);
      if (action < 45) {  // roll back: the work and the claim vanish together
        hold.drop();
        conn->must("ROLLBACK", {}, key);
        counts.rolled_back++;
        continue;
      }
      if (action < 55) {  // stall past the lease, still inside the transaction
        std::this_thread::sleep_for(std::chrono::milliseconds(o.stall_ms));
        counts.stalled++;
      }
      auto f = conn->must(
          "SELECT idempotency.finish($1, $2, $3, 201, convert_to('id=' || $4, 'UTF8'),"
          " jsonb_build_object('id', $4::bigint))",
          {o.scope, key, token, business_id}, "finish " + key);
      if (!f) {
        hold.drop();
        continue;
      }
      if (f->get(0) != "t") Fail("finish returned " + f->get(0) + " for " + key);
      hold.drop();
      auto cm = conn->must("COMMIT", {}, key);
      if (!cm) continue;
      counts.finished++;
      seen->push_back({'F', key, "id=" + business_id});
    } catch (const SerializationFailure&) {
      counts.serialization++;
      conn->exec("ROLLBACK");
    } catch (const Disconnected&) {
      counts.disconnects++;
      // Nobody holds anything once the connection is gone.
      (*holders)[k].count.store(0);
      if (!o.tolerate_disconnect) Fail("connection lost");
      return;
    }
  }
}

// Multi-step: claim (commit) -> for each step: renew, external call (its own
// transaction), checkpoint (with a side-table row, same transaction) ->
// finish in a later transaction. Holders die at random between steps.
void MultiStepWorker(const Options& o, int id, std::vector<Seen>* seen) {
  std::mt19937_64 rng(o.seed * 7919ULL + id);
  std::uniform_int_distribution<int> pct(0, 99);
  std::unique_ptr<Conn> conn;
  try {
    conn = std::make_unique<Conn>(o, o.tolerate_disconnect);
  } catch (const Disconnected&) {
    counts.disconnects++;
    return;
  }
  const std::string lease = std::to_string(o.lease_ms) + " milliseconds";
  for (;;) {
    const long r = next_request++;
    if (r >= o.requests) break;
    // A window of hot keys sweeps the key space `passes` times, so that keys
    // abandoned in one pass are met again (and taken over) in the next.
    const int base = static_cast<int>((r * static_cast<long>(o.keys) * o.passes / o.requests) % o.keys);
    const int k = (base + std::uniform_int_distribution<int>(0, o.window - 1)(rng)) % o.keys;
    const std::string key = "m" + std::to_string(k);
    try {
      auto c = conn->must(kClaimSql, {o.scope, key, Fingerprint(key, false), lease, "0", "24 hours"}, "claim " + key);
      if (!c) continue;
      const std::string outcome = c->get(0);
      if (outcome == "replay") {
        counts.replay++;
        seen->push_back({'R', key, c->get(5)});
        continue;
      }
      if (outcome != "claimed") {
        (outcome == "mismatch" ? counts.mismatch : counts.in_progress)++;
        if (outcome == "mismatch") Fail("mismatch on " + key);
        continue;
      }
      counts.claimed++;
      const std::string token = c->get(1);
      const int attempt = std::atoi(c->get(2).c_str());
      int done = 0;
      if (!c->null(3)) done = std::atoi(c->get(3).c_str() + 4);  // "step<n>"
      if (attempt > 1) counts.takeovers++;
      if (done > 0) counts.resumed++;
      if (attempt == 1 && done != 0) Fail("fresh claim of " + key + " with a recovery point");
      bool dead = false;
      for (int step = done + 1; step <= o.steps && !dead; step++) {
        if (pct(rng) < 6) {  // die before the step
          counts.deaths++;
          dead = true;
          break;
        }
        // Renew the lease (and learn whether this holder was fenced off).
        auto renew = conn->exec("SELECT idempotency.checkpoint($1, $2, $3, nullif($4, ''), $5::interval)",
                                {o.scope, key, token, done ? "step" + std::to_string(done) : std::string(), lease});
        if (!renew->ok()) {
          if (renew->sqlstate() == "IK001") {
            counts.fenced++;
            dead = true;
            break;
          }
          Fail("renew " + key + ": [" + renew->sqlstate() + "] " + PQresultErrorMessage(renew->res));
          dead = true;
          break;
        }
        // The external call, fenced as a careful external system would: it
        // is refused when the token no longer holds the key.
        auto ext = conn->must(
            "INSERT INTO torture.external (scope, key, step, token) SELECT $1, $2, $3, $4"
            " WHERE (idempotency.lookup($1, $2)).token = $4::bigint",
            {o.scope, key, std::to_string(step), token}, "external " + key);
        if (!ext) break;
        if (std::string(PQcmdTuples(ext->res)) != "1") {
          counts.fenced++;
          dead = true;
          break;
        }
        if (pct(rng) < 6) {  // die after the external call, before recording it
          counts.deaths++;
          conn->must("INSERT INTO torture.deaths (scope, key, step) VALUES ($1, $2, $3)",
                     {o.scope, key, std::to_string(step)}, "death " + key);
          dead = true;
          break;
        }
        if (pct(rng) < 4) {  // hang past the lease: the next holder may take over
          std::this_thread::sleep_for(std::chrono::milliseconds(o.stall_ms));
          counts.stalled++;
        }
        conn->must("BEGIN", {}, key);
        auto cp = conn->exec("SELECT idempotency.checkpoint($1, $2, $3, $4, $5::interval)",
                             {o.scope, key, token, "step" + std::to_string(step), lease});
        if (!cp->ok()) {
          conn->exec("ROLLBACK");
          if (cp->sqlstate() == "IK001") {  // taken over meanwhile: the next holder redoes this step
            counts.fenced++;
            conn->must("INSERT INTO torture.deaths (scope, key, step) VALUES ($1, $2, $3)",
                       {o.scope, key, std::to_string(step)}, "fenced " + key);
            dead = true;
            break;
          }
          Fail("checkpoint " + key + ": [" + cp->sqlstate() + "] " + PQresultErrorMessage(cp->res));
          dead = true;
          break;
        }
        if (!conn->must("INSERT INTO torture.checkpoints (scope, key, step, token) VALUES ($1, $2, $3, $4)",
                        {o.scope, key, std::to_string(step), token}, "checkpoint row " + key))
          break;
        if (!conn->must("COMMIT", {}, key)) break;
        counts.steps_done++;
        done = step;
      }
      if (dead || done < o.steps) continue;
      auto f =
          conn->exec("SELECT idempotency.finish($1, $2, $3, 201, convert_to('done', 'UTF8'))", {o.scope, key, token});
      if (!f->ok()) {
        if (f->sqlstate() == "IK001") {
          counts.fenced++;
          continue;
        }
        Fail("finish " + key + ": [" + f->sqlstate() + "] " + PQresultErrorMessage(f->res));
        continue;
      }
      counts.finished++;
      seen->push_back({'F', key, "done"});
    } catch (const Disconnected&) {
      counts.disconnects++;
      if (!o.tolerate_disconnect) Fail("connection lost");
      return;
    }
  }
}

void WriteSeen(const Options& o, const std::vector<std::vector<Seen>>& all) {
  // A fresh connection (retrying while a crashed server comes back).
  PGconn* c = nullptr;
  for (int i = 0; i < 600; i++) {
    c = PQconnectdb(o.conninfo.c_str());
    if (PQstatus(c) == CONNECTION_OK) break;
    PQfinish(c);
    c = nullptr;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!c) {
    Fail("cannot connect to write the log");
    return;
  }
  PQclear(PQexec(c, "BEGIN"));
  for (const auto& v : all)
    for (const auto& s : v) {
      const std::string kind(1, s.kind);
      const char* p[] = {o.scope.c_str(), kind.c_str(), s.key.c_str(), s.value.c_str()};
      PGresult* r = PQexecParams(c, "INSERT INTO torture.seen (scope, kind, key, value) VALUES ($1, $2, $3, $4)", 4,
                                 nullptr, p, nullptr, nullptr, 0);
      if (PQresultStatus(r) != PGRES_COMMAND_OK) Fail(std::string("log: ") + PQresultErrorMessage(r));
      PQclear(r);
    }
  PQclear(PQexec(c, "COMMIT"));
  PQfinish(c);
}

const char* kSetup = R"SQL(
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE SCHEMA IF NOT EXISTS torture;
CREATE TABLE IF NOT EXISTS torture.business (id bigserial PRIMARY KEY, scope text NOT NULL, key text NOT NULL,
                                             token bigint NOT NULL, at timestamptz DEFAULT clock_timestamp(),
                                             claimed_at timestamptz, expires_at timestamptz);
CREATE TABLE IF NOT EXISTS torture.seen (scope text NOT NULL, kind char NOT NULL, key text NOT NULL, value text);
CREATE SEQUENCE IF NOT EXISTS torture.seq;
CREATE TABLE IF NOT EXISTS torture.external (seq bigint DEFAULT nextval('torture.seq'), scope text, key text,
                                             step int, token bigint);
CREATE TABLE IF NOT EXISTS torture.checkpoints (seq bigint DEFAULT nextval('torture.seq'), scope text, key text,
                                                step int, token bigint);
CREATE TABLE IF NOT EXISTS torture.deaths (seq bigint DEFAULT nextval('torture.seq'), scope text, key text, step int);
)SQL";

int Usage() {
  std::fprintf(stderr,
               "usage: torture setup|load|multistep [--clients N] [--requests N] [--keys N] [--window N] [--passes N]\n"
               "       [--lease-ms N] [--stall-ms N] [--seed N] [--scope S] [--steps N] [--wait-pct P] [--wait-ms N] "
               "[--ttl-ms N] [--sweep-ms N] [--isolation \"repeatable read\"|serializable]\n"
               "       [--tolerate-disconnect] [--conninfo STR]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  const std::string mode = argv[1];
  Options o;
  for (int i = 2; i < argc; i++) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) std::exit(Usage());
      return argv[++i];
    };
    if (a == "--clients")
      o.clients = std::stoi(next());
    else if (a == "--requests")
      o.requests = std::stol(next());
    else if (a == "--keys")
      o.keys = std::stoi(next());
    else if (a == "--passes")
      o.passes = std::stoi(next());
    else if (a == "--window")
      o.window = std::stoi(next());
    else if (a == "--lease-ms")
      o.lease_ms = std::stoi(next());
    else if (a == "--stall-ms")
      o.stall_ms = std::stoi(next());
    else if (a == "--seed")
      o.seed = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--scope")
      o.scope = next();
    else if (a == "--steps")
      o.steps = std::stoi(next());
    else if (a == "--wait-pct")
      o.wait_pct = std::stoi(next());
    else if (a == "--wait-ms")
      o.wait_ms = std::stoi(next());
    else if (a == "--ttl-ms")
      o.ttl_ms = std::stoi(next());
    else if (a == "--sweep-ms")
      o.sweep_ms = std::stoi(next());
    else if (a == "--isolation")
      o.isolation = next();
    else if (a == "--conninfo")
      o.conninfo = next();
    else if (a == "--tolerate-disconnect")
      o.tolerate_disconnect = true;
    else
      return Usage();
  }
  if (mode == "setup") {
    PGconn* c = PQconnectdb(o.conninfo.c_str());
    PGresult* r = PQexec(c, kSetup);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) std::fprintf(stderr, "setup: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : 1;
  }
  if (mode != "load" && mode != "multistep") return Usage();

  std::vector<KeySlot> holder_counts(static_cast<std::size_t>(o.keys));
  holders = &holder_counts;
  std::vector<std::vector<Seen>> seen(static_cast<std::size_t>(o.clients));
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < o.clients; t++)
    threads.emplace_back(mode == "load" ? LoadWorker : MultiStepWorker, std::cref(o), t, &seen[t]);
  std::atomic<bool> done{false};
  std::atomic<long> swept{0};
  std::thread sweeper;
  if (o.sweep_ms > 0)
    sweeper = std::thread([&] {
      try {
        Conn c(o, o.tolerate_disconnect);
        while (!done) {
          auto r = c.exec("SELECT idempotency.sweep(100)");
          if (!r->ok())
            Fail(std::string("sweep: ") + PQresultErrorMessage(r->res));
          else
            swept += std::atol(r->get(0).c_str());
          std::this_thread::sleep_for(std::chrono::milliseconds(o.sweep_ms));
        }
      } catch (const Disconnected&) {
        if (!o.tolerate_disconnect) Fail("sweeper connection lost");
      }
    });
  for (auto& t : threads) t.join();
  done = true;
  if (sweeper.joinable()) sweeper.join();
  if (o.sweep_ms > 0) std::printf("sweep(): %ld keys deleted during the run\n", swept.load());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WriteSeen(o, seen);
  std::printf(
      "%s: %ld requests, %d clients, %.1f s: claimed %ld (takeovers %ld), replay %ld, in_progress %ld, mismatch %ld; "
      "finished %ld, rolled back %ld, released %ld, stalled %ld, abandoned %ld; deaths %ld, fenced %ld, resumed %ld, "
      "steps %ld; serialization failures %ld; disconnects %ld; failures %ld\n",
      mode.c_str(), std::min<long>(next_request.load(), o.requests), o.clients, secs, counts.claimed.load(),
      counts.takeovers.load(), counts.replay.load(), counts.in_progress.load(), counts.mismatch.load(),
      counts.finished.load(), counts.rolled_back.load(), counts.released.load(), counts.stalled.load(),
      counts.abandoned.load(), counts.deaths.load(), counts.fenced.load(), counts.resumed.load(),
      counts.steps_done.load(), counts.serialization.load(), counts.disconnects.load(), failures.load());
  return failures.load() == 0 ? 0 : 1;
}
