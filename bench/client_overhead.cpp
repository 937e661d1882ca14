// Workload 7 of bench/run: what idempotency::Client adds per call on top of
// libpq. Each pair sends the same prepared statement with binary parameters
// and results over the same connection; "raw" reads two columns of the
// answer, the client decodes all of it into a ClaimResult / bool.
//
//   client_overhead [benchmark flags] CONNINFO
//
// The keys are steady-state calls that change nothing, so every iteration does
// the same work: a replay claim of a completed key, and a repeated finish with
// the same token and response (returns false).
#include <idempotency/client.hpp>
#include <libpq-fe.h>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

PGconn* g_conn = nullptr;
std::string g_fingerprint(32, '\x5a');
std::int64_t g_token = 0;
const idempotency::Response g_response{201, "{\"id\":12345,\"amount\":100,\"currency\":\"EUR\"}",
                                       "{\"content-type\": \"application/json\"}"};

void Die(const char* what, PGresult* r) {
  std::fprintf(stderr, "%s: %s\n", what, r ? PQresultErrorMessage(r) : PQerrorMessage(g_conn));
  std::exit(1);
}

std::string Be64(std::int64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[i] = static_cast<char>((static_cast<std::uint64_t>(v) >> (56 - 8 * i)) & 0xff);
  return out;
}

std::string Be32(std::int32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; i++) out[i] = static_cast<char>((static_cast<std::uint32_t>(v) >> (24 - 8 * i)) & 0xff);
  return out;
}

// The same statement texts and parameter types as the client prepares.
constexpr const char* kClaimSql =
    "SELECT c.outcome::text, c.token, c.attempt, c.recovery_point, c.response_status, "
    "c.response_headers, c.response_body, c.expires_at, c.locked_until FROM "
    "idempotency.claim($1, $2, $3, $4, $5, $6) AS c";
constexpr const char* kFinishSql = "SELECT idempotency.finish($1, $2, $3, $4, $5, $6)";

void Prepare(const char* name, const char* sql, int n, const Oid* types) {
  PGresult* r = PQprepare(g_conn, name, sql, n, types);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) Die("prepare", r);
  PQclear(r);
}

void Setup() {
  const Oid claim_types[] = {25, 25, 17, 1186, 1186, 1186};
  const Oid finish_types[] = {25, 25, 20, 23, 17, 3802};
  Prepare("bench_raw_claim", kClaimSql, 6, claim_types);
  Prepare("bench_raw_finish", kFinishSql, 6, finish_types);
  idempotency::Client client(g_conn);
  idempotency::ClaimOptions options;
  options.fingerprint = g_fingerprint;
  auto claimed = client.claim("cxx", "replay", options);
  if (claimed.claimed()) client.finish("cxx", "replay", *claimed.token, g_response);
  claimed = client.claim("cxx", "finish", options);
  if (claimed.claimed()) {
    g_token = *claimed.token;
    client.finish("cxx", "finish", g_token, g_response);
  } else {
    PGresult* r = PQexec(g_conn, "SELECT token FROM idempotency.keys WHERE scope = 'cxx' AND key = 'finish'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) Die("token", r);
    g_token = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
    PQclear(r);
  }
}

void BM_raw_claim(benchmark::State& state) {
  const std::string zero_wait(16, '\0');  // interval '0' in binary, as the client sends wait
  const char* values[6] = {"cxx", "replay", g_fingerprint.data(), nullptr, nullptr, zero_wait.data()};
  const int lengths[6] = {3, 6, static_cast<int>(g_fingerprint.size()), 0, 0, 16};
  const int formats[6] = {1, 1, 1, 1, 1, 1};
  for (auto _ : state) {
    PGresult* r = PQexecPrepared(g_conn, "bench_raw_claim", 6, values, lengths, formats, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) Die("raw claim", r);
    benchmark::DoNotOptimize(PQgetvalue(r, 0, 0));
    benchmark::DoNotOptimize(PQgetlength(r, 0, 6));
    PQclear(r);
  }
}

void BM_client_claim(benchmark::State& state) {
  idempotency::Client client(g_conn);
  idempotency::ClaimOptions options;
  options.fingerprint = g_fingerprint;
  for (auto _ : state) {
    auto result = client.claim("cxx", "replay", options);
    if (!result.replayed()) state.SkipWithError("not a replay");
    benchmark::DoNotOptimize(result);
  }
}

void BM_raw_finish(benchmark::State& state) {
  const std::string token = Be64(g_token), status = Be32(g_response.status);
  const std::string headers = std::string(1, '\x01') + g_response.headers_json;  // jsonb binary v1
  const char* values[6] = {"cxx", "finish", token.data(), status.data(), g_response.body.data(), headers.data()};
  const int lengths[6] = {3, 6, 8, 4, static_cast<int>(g_response.body.size()), static_cast<int>(headers.size())};
  const int formats[6] = {1, 1, 1, 1, 1, 1};
  for (auto _ : state) {
    PGresult* r = PQexecPrepared(g_conn, "bench_raw_finish", 6, values, lengths, formats, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) Die("raw finish", r);
    benchmark::DoNotOptimize(PQgetvalue(r, 0, 0)[0]);
    PQclear(r);
  }
}

void BM_client_finish(benchmark::State& state) {
  idempotency::Client client(g_conn);
  for (auto _ : state) {
    bool stored = client.finish("cxx", "finish", g_token, g_response);
    if (stored) state.SkipWithError("finish stored again");
    benchmark::DoNotOptimize(stored);
  }
}

BENCHMARK(BM_raw_claim)->UseRealTime();
BENCHMARK(BM_client_claim)->UseRealTime();
BENCHMARK(BM_raw_finish)->UseRealTime();
BENCHMARK(BM_client_finish)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s [benchmark flags] CONNINFO\n", argv[0]);
    return 2;
  }
  g_conn = PQconnectdb(argv[1]);
  if (PQstatus(g_conn) != CONNECTION_OK) Die("connect", nullptr);
  Setup();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  PQfinish(g_conn);
  return 0;
}
