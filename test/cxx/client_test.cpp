// GoogleTest suite of the C++ client against a real server.
// Connection: libpq's PG* environment (PGHOST, PGPORT, PGUSER); every test
// works in the database idempotency_cxx_test (created if missing, override
// with IDEMPOTENCY_TEST_DB) under scopes of its own.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "idempotency/client.hpp"
#include "test_env.hpp"

using namespace idempotency;
using namespace std::chrono_literals;

using namespace test_env;

namespace {


// A raw libpq connection for set-up and for playing "the caller".
class Conn {
 public:
  explicit Conn(const std::string& ci = conninfo()) : c_(PQconnectdb(ci.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK) throw std::runtime_error(std::string("connect: ") + PQerrorMessage(c_));
    PQclear(PQexec(c_, "SET client_min_messages = warning"));
  }
  ~Conn() { PQfinish(c_); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  PGconn* get() const { return c_; }
  operator PGconn*() const { return c_; }

  // Runs sql (with text parameters); returns the first value or "" and the SQLSTATE in *state.
  std::string query(const std::string& sql, std::vector<std::string> params = {}, std::string* state = nullptr) {
    std::vector<const char*> v;
    for (auto& p : params) v.push_back(p.c_str());
    PGresult* r = PQexecParams(c_, sql.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0);
    std::string out;
    auto st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      if (state) {
        *state = s ? s : "?????";
      } else {
        std::string msg = PQresultErrorMessage(r);
        PQclear(r);
        throw std::runtime_error(sql + ": " + msg);
      }
    } else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
      out = PQgetvalue(r, 0, 0);
    }
    PQclear(r);
    return out;
  }
  void exec(const std::string& sql) { query(sql); }

 private:
  PGconn* c_;
};

class Env : public ::testing::Environment {
 public:
  void SetUp() override {
    {
      Conn admin("dbname=postgres");
      std::string state;
      if (admin.query("SELECT 1 FROM pg_database WHERE datname = $1", {db_name()}).empty()) {
        admin.query("CREATE DATABASE " + db_name(), {}, &state);  // 42P04 if a parallel test won
      }
    }
    Conn c;
    for (int i = 0; i < 5; ++i) {  // concurrent CREATE ... IF NOT EXISTS may still collide
      std::string state;
      c.query("CREATE EXTENSION IF NOT EXISTS pg_idempotency", {}, &state);
      c.query("CREATE TABLE IF NOT EXISTS cxx_work (scope text NOT NULL, note text NOT NULL)", {}, &state);
      if (state.empty()) break;
      std::this_thread::sleep_for(100ms);
    }
  }
};
[[maybe_unused]] auto* const g_env = ::testing::AddGlobalTestEnvironment(new Env);

// A scope of this test's own.
std::string unique_scope() {
  static std::atomic<int> n{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string("cxx:") + info->name() + ":" + std::to_string(getpid()) + ":" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" + std::to_string(n++);
}

std::string bytes_0_to_255(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i % 256);
  return s;
}

int notes(Conn& c, const std::string& scope) {
  return std::stoi(c.query("SELECT count(*) FROM cxx_work WHERE scope = $1", {scope}));
}

Response note_handler_response(PGconn* conn, const std::string& scope, const std::string& note) {
  const char* params[2] = {scope.c_str(), note.c_str()};
  PGresult* r =
      PQexecParams(conn, "INSERT INTO cxx_work (scope, note) VALUES ($1, $2)", 2, nullptr, params, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
  PQclear(r);
  return Response{201, "created " + note, R"({"Content-Type": "text/plain"})"};
}

}  // namespace

#define EXPECT_SQLSTATE(statement, state)                                         \
  do {                                                                            \
    try {                                                                         \
      statement;                                                                  \
      ADD_FAILURE() << #statement << ": no error, expected SQLSTATE " << (state); \
    } catch (const idempotency::Error& e_) {                                      \
      EXPECT_EQ(e_.sqlstate(), (state)) << #statement << ": " << e_.what();       \
    }                                                                             \
  } while (0)

// ---- outcomes ---------------------------------------------------------------

TEST(Claim, FreshKeyIsClaimed) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  const auto before = Clock::now();
  ClaimResult r = c.claim(s, "k", {std::nullopt, 1h, 30s, std::nullopt});
  EXPECT_EQ(r.outcome, Outcome::Claimed);
  EXPECT_TRUE(r.claimed());
  ASSERT_TRUE(r.token.has_value());
  EXPECT_EQ(r.attempt, 1);
  EXPECT_FALSE(r.recovery_point.has_value());
  EXPECT_FALSE(r.response.has_value());
  ASSERT_TRUE(r.expires_at.has_value());
  ASSERT_TRUE(r.locked_until.has_value());
  EXPECT_NEAR(std::chrono::duration<double>(*r.expires_at - before).count(), 3600.0, 5.0);
  EXPECT_NEAR(std::chrono::duration<double>(*r.locked_until - before).count(), 30.0, 5.0);
  // Every claim gets a new token.
  ClaimResult other = c.claim(s, "k2");
  ASSERT_TRUE(other.token.has_value());
  EXPECT_NE(*other.token, *r.token);
}

TEST(Claim, CompletedKeyReplaysStoredResponse) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  ClaimResult r = c.claim(s, "k");
  ASSERT_TRUE(r.claimed());
  EXPECT_TRUE(c.finish(s, "k", *r.token, {201, "{\"id\":7}", R"({"Location": "/payments/7"})"}));
  ClaimResult again = c.claim(s, "k");
  EXPECT_EQ(again.outcome, Outcome::Replay);
  EXPECT_TRUE(again.replayed());
  EXPECT_FALSE(again.token.has_value());
  ASSERT_TRUE(again.response.has_value());
  EXPECT_EQ(again.response->status, 201);
  EXPECT_EQ(again.response->body, "{\"id\":7}");
  auto headers = parse_headers_json(again.response->headers_json);
  ASSERT_EQ(headers.size(), 1u);
  EXPECT_EQ(headers[0].first, "Location");
  EXPECT_EQ(headers[0].second, "/payments/7");
  EXPECT_TRUE(again.expires_at.has_value());
}

// 1.2: the claiming request's traceparent is stored; replay and in_progress
// return it (the link to the request that did the work); without the option
// the claim is the six-argument one and returns none.
TEST(Claim, TraceContextIsStoredAndReplayedAsTheLink) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  const std::string first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::string second = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
  ClaimOptions with_first;
  with_first.trace_context = first;
  ClaimResult r = c.claim(s, "k", with_first);
  ASSERT_TRUE(r.claimed());
  EXPECT_EQ(r.trace_context, first);
  ClaimOptions with_second;
  with_second.trace_context = second;
  ClaimResult busy = c.claim(s, "k", with_second);
  EXPECT_EQ(busy.outcome, Outcome::InProgress);
  EXPECT_EQ(busy.trace_context, first);
  ASSERT_TRUE(c.finish(s, "k", *r.token, {200, "ok", ""}));
  ClaimResult again = c.claim(s, "k", with_second);
  EXPECT_EQ(again.outcome, Outcome::Replay);
  EXPECT_EQ(again.trace_context, first);
  EXPECT_FALSE(c.claim(s, "k").trace_context.has_value());  // not asked for
  ClaimOptions bad;
  bad.trace_context = "not-a-traceparent";
  EXPECT_SQLSTATE(c.claim(s, "other", bad), "22023");
  // execute() passes it too
  ClaimResult executed = c.execute(s, "exec", with_second, [](PGconn*) { return Response{201, "x", ""}; });
  EXPECT_TRUE(executed.claimed());
  EXPECT_EQ(executed.trace_context, second);
  EXPECT_EQ(c.execute(s, "exec", with_first, [](PGconn*) { return Response{500, "", ""}; }).trace_context, second);
}

TEST(Claim, NullHeadersAndEmptyBodyRoundTrip) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto r = c.claim(s, "k");
  c.finish(s, "k", *r.token, {204, "", ""});
  auto again = c.claim(s, "k");
  ASSERT_TRUE(again.response.has_value());
  EXPECT_EQ(again.response->status, 204);
  EXPECT_EQ(again.response->body, "");
  EXPECT_EQ(again.response->headers_json, "");
}

TEST(Claim, KeyHeldByOpenTransactionIsInProgressAtOnce) {
  Conn holder;
  Client borrowed(holder.get(), test_options());
  Client other(conninfo(), test_options());
  const auto s = unique_scope();
  holder.exec("BEGIN");
  ASSERT_TRUE(borrowed.claim(s, "k").claimed());
  const auto t0 = std::chrono::steady_clock::now();
  ClaimResult r = other.claim(s, "k");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(r.outcome, Outcome::InProgress);
  EXPECT_FALSE(r.token.has_value());
  EXPECT_FALSE(r.response.has_value());
  holder.exec("ROLLBACK");
}

TEST(Claim, WaitSeesTheHolderFinishAndReplays) {
  Conn holder;
  Client borrowed(holder.get(), test_options());
  const auto s = unique_scope();
  holder.exec("BEGIN");
  auto mine = borrowed.claim(s, "k");
  ASSERT_TRUE(mine.claimed());
  Client other(conninfo(), test_options());
  // The waiter must answer after the holder's COMMIT was sent, never before:
  // compare against the moment the COMMIT left, not a sleep length (a loaded
  // machine stretches the time between starting the thread and the claim).
  std::atomic<std::chrono::steady_clock::time_point> commit_sent{};
  std::thread t([&] {
    std::this_thread::sleep_for(400ms);
    borrowed.finish(s, "k", *mine.token, {200, "done", ""});
    commit_sent = std::chrono::steady_clock::now();
    holder.exec("COMMIT");
  });
  ClaimResult r = other.claim(s, "k", {std::nullopt, std::nullopt, std::nullopt, 10s});
  const auto answered = std::chrono::steady_clock::now();
  t.join();
  EXPECT_EQ(r.outcome, Outcome::Replay);
  ASSERT_TRUE(r.response.has_value());
  EXPECT_EQ(r.response->body, "done");
  EXPECT_GE(answered, commit_sent.load());
}

TEST(Claim, WaitSeesTheHolderRollBackAndClaims) {
  Conn holder;
  Client borrowed(holder.get(), test_options());
  const auto s = unique_scope();
  holder.exec("BEGIN");
  ASSERT_TRUE(borrowed.claim(s, "k").claimed());
  std::thread t([&] {
    std::this_thread::sleep_for(300ms);
    holder.exec("ROLLBACK");
  });
  Client other(conninfo(), test_options());
  ClaimResult r = other.claim(s, "k", {std::nullopt, std::nullopt, std::nullopt, 10s});
  t.join();
  EXPECT_EQ(r.outcome, Outcome::Claimed);
  EXPECT_EQ(r.attempt, 1);
}

TEST(Claim, WaitGivesUpAfterWait) {
  Conn holder;
  Client borrowed(holder.get(), test_options());
  const auto s = unique_scope();
  holder.exec("BEGIN");
  ASSERT_TRUE(borrowed.claim(s, "k").claimed());
  Client other(conninfo(), test_options());
  const auto t0 = std::chrono::steady_clock::now();
  ClaimResult r = other.claim(s, "k", {std::nullopt, std::nullopt, std::nullopt, 300ms});
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.outcome, Outcome::InProgress);
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 5s);
  holder.exec("ROLLBACK");
}

TEST(Claim, CommittedInProgressWithLeaseRunningIsInProgress) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto first = c.claim(s, "k", {std::nullopt, std::nullopt, 60s, std::nullopt});  // autocommit
  ASSERT_TRUE(first.claimed());
  Client other(conninfo(), test_options());
  auto r = other.claim(s, "k");
  EXPECT_EQ(r.outcome, Outcome::InProgress);
  EXPECT_FALSE(r.token.has_value());
  ASSERT_TRUE(r.locked_until.has_value());
  EXPECT_GT(*r.locked_until, Clock::now() + 30s);
  EXPECT_EQ(to_http(r).status, 409);
}

TEST(Claim, ExpiredLeaseIsTakenOverWithRecoveryPoint) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto first = c.claim(s, "k", {std::nullopt, std::nullopt, 300ms, std::nullopt});
  ASSERT_TRUE(first.claimed());
  auto until = c.checkpoint(s, "k", *first.token, "charged-card", 300ms);
  EXPECT_GT(until, Clock::now() - 5s);
  std::this_thread::sleep_for(900ms);
  Client other(conninfo(), test_options());
  auto second = other.claim(s, "k");
  ASSERT_EQ(second.outcome, Outcome::Claimed);
  EXPECT_EQ(second.attempt, 2);
  ASSERT_TRUE(second.recovery_point.has_value());
  EXPECT_EQ(*second.recovery_point, "charged-card");
  EXPECT_NE(*second.token, *first.token);
  // The old holder is fenced off.
  EXPECT_SQLSTATE(c.finish(s, "k", *first.token, {200, "late", ""}), "IK001");
  EXPECT_SQLSTATE(c.checkpoint(s, "k", *first.token, "x"), "IK001");
  EXPECT_SQLSTATE(c.release(s, "k", *first.token), "IK001");
  EXPECT_TRUE(other.finish(s, "k", *second.token, {200, "second", ""}));
  auto rec = c.lookup(s, "k");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->attempt, 2);
  EXPECT_EQ(rec->response->body, "second");
}

TEST(Claim, SlowHolderMayFinishWhileNobodyTookOver) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto first = c.claim(s, "k", {std::nullopt, std::nullopt, 200ms, std::nullopt});
  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(c.finish(s, "k", *first.token, {200, "slow", ""}));
  EXPECT_EQ(c.claim(s, "k").outcome, Outcome::Replay);
}

TEST(Claim, MismatchTakesPrecedenceAndReturnsNothingStored) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  ClaimOptions a{std::string("fingerprint-A"), std::nullopt, std::nullopt, std::nullopt};
  ClaimOptions b{std::string("fingerprint-B"), std::nullopt, std::nullopt, std::nullopt};
  auto first = c.claim(s, "k", a);
  ASSERT_TRUE(first.claimed());
  // over in_progress
  auto r = c.claim(s, "k", b);
  EXPECT_EQ(r.outcome, Outcome::Mismatch);
  EXPECT_FALSE(r.token.has_value());
  // over replay
  c.finish(s, "k", *first.token, {200, "secret", ""});
  r = c.claim(s, "k", b);
  EXPECT_EQ(r.outcome, Outcome::Mismatch);
  EXPECT_FALSE(r.response.has_value());
  EXPECT_EQ(to_http(r).status, 422);
  // same fingerprint or none: replay
  EXPECT_EQ(c.claim(s, "k", a).outcome, Outcome::Replay);
  EXPECT_EQ(c.claim(s, "k").outcome, Outcome::Replay);
}

TEST(Claim, ExpiredKeyIsClaimedAfresh) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto first = c.claim(s, "k", {std::nullopt, 300ms, std::nullopt, std::nullopt});
  c.finish(s, "k", *first.token, {200, "old", ""});
  std::this_thread::sleep_for(700ms);
  EXPECT_FALSE(c.lookup(s, "k").has_value());
  auto again = c.claim(s, "k");
  EXPECT_EQ(again.outcome, Outcome::Claimed);
  EXPECT_EQ(again.attempt, 1);
  EXPECT_SQLSTATE(c.finish(s, "k", *first.token, {200, "stale", ""}), "IK001");
}

TEST(Claim, ExpiredInProgressTokenCannotFinish) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto first = c.claim(s, "k", {std::nullopt, 300ms, 100ms, std::nullopt});
  std::this_thread::sleep_for(700ms);
  EXPECT_SQLSTATE(c.finish(s, "k", *first.token, {200, "too late", ""}), "IK001");
}

TEST(Claim, RepeatableReadRaceIsSerializationFailureOrNoSecondWinner) {
  Conn a, b;
  Client ca(a.get(), test_options()), cb(b.get());
  const auto s = unique_scope();
  a.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
  a.exec("SELECT 1");  // a's snapshot is taken before b's claim commits
  b.exec("BEGIN");
  auto won = cb.claim(s, "k");
  ASSERT_TRUE(won.claimed());
  cb.finish(s, "k", *won.token, {200, "b", ""});
  b.exec("COMMIT");
  try {
    auto r = ca.claim(s, "k");
    EXPECT_NE(r.outcome, Outcome::Claimed) << "two winners for one key";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), "40001") << e.what();
  }
  a.exec("ROLLBACK");
  a.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");  // the retried transaction sees the winner
  EXPECT_EQ(ca.claim(s, "k").outcome, Outcome::Replay);
  a.exec("COMMIT");
}

// ---- finish / checkpoint / release / lookup / sweep / fingerprint ------------

TEST(Finish, RepeatedSameResponseIsFalseDifferentIsIK002) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto r = c.claim(s, "k");
  Response resp{201, bytes_0_to_255(300), R"({"A": "1"})"};
  EXPECT_TRUE(c.finish(s, "k", *r.token, resp));
  EXPECT_FALSE(c.finish(s, "k", *r.token, resp));
  EXPECT_SQLSTATE(c.finish(s, "k", *r.token, {500, "other", ""}), "IK002");
  EXPECT_SQLSTATE(c.finish(s, "k", *r.token, {201, "other body", R"({"A": "1"})"}), "IK002");
  // Errors leave the stored data as it was.
  auto rec = c.lookup(s, "k");
  ASSERT_TRUE(rec && rec->response);
  EXPECT_EQ(rec->response->status, 201);
  EXPECT_EQ(rec->response->body, resp.body);
}

TEST(Finish, UnknownKeyOrWrongTokenIsIK001) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  EXPECT_SQLSTATE(c.finish(s, "nope", 12345, {200, "", ""}), "IK001");
  auto r = c.claim(s, "k");
  EXPECT_SQLSTATE(c.finish(s, "k", *r.token + 1, {200, "", ""}), "IK001");
  EXPECT_SQLSTATE(c.finish(s, "k", -(*r.token), {200, "", ""}), "IK001");
  EXPECT_TRUE(c.finish(s, "k", *r.token, {200, "", ""}));
}

TEST(Checkpoint, RenewsLeaseAndKeepsRecoveryPoint) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto r = c.claim(s, "k", {std::nullopt, std::nullopt, 1s, std::nullopt});
  auto until = c.checkpoint(s, "k", *r.token, "step-1", 60s);
  EXPECT_GT(until, Clock::now() + 30s);
  auto rec = c.lookup(s, "k");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->state, KeyState::InProgress);
  EXPECT_EQ(rec->recovery_point.value_or(""), "step-1");
  ASSERT_TRUE(rec->locked_until.has_value());
  EXPECT_GT(*rec->locked_until, Clock::now() + 30s);
  EXPECT_SQLSTATE(c.checkpoint(s, "k", *r.token + 1, "x"), "IK001");
  EXPECT_SQLSTATE(c.checkpoint(s, "k", *r.token, "x", 0ms), "22023");
  c.finish(s, "k", *r.token, {200, "", ""});
  EXPECT_SQLSTATE(c.checkpoint(s, "k", *r.token, "after"), "IK001");  // completed: not in_progress
}

TEST(Release, GivesTheKeyBack) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto r = c.claim(s, "k");
  EXPECT_SQLSTATE(c.release(s, "k", *r.token + 1), "IK001");
  EXPECT_TRUE(c.release(s, "k", *r.token));
  auto again = c.claim(s, "k");
  EXPECT_EQ(again.outcome, Outcome::Claimed);
  EXPECT_SQLSTATE(c.release(s, "k", *r.token), "IK001");
  EXPECT_SQLSTATE(c.release(s, "absent", 1), "IK001");
}

TEST(Lookup, ReturnsTheRowOrNothing) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  EXPECT_FALSE(c.lookup(s, "k").has_value());
  const std::string fp(32, '\x07');
  auto r = c.claim(s, "k", {fp, 2h, std::nullopt, std::nullopt});
  auto rec = c.lookup(s, "k");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->scope, s);
  EXPECT_EQ(rec->key, "k");
  EXPECT_EQ(rec->fingerprint.value_or(""), fp);
  EXPECT_EQ(rec->state, KeyState::InProgress);
  EXPECT_EQ(rec->token, *r.token);
  EXPECT_EQ(rec->attempt, 1);
  EXPECT_FALSE(rec->response.has_value());
  EXPECT_FALSE(rec->completed_at.has_value());
  ASSERT_TRUE(rec->created_at && rec->expires_at);
  EXPECT_NEAR(std::chrono::duration<double>(*rec->expires_at - *rec->created_at).count(), 7200.0, 0.001);
  EXPECT_NEAR(std::chrono::duration<double>(Clock::now() - *rec->created_at).count(), 0.0, 30.0);
  c.finish(s, "k", *r.token, {202, "b", R"({"X": "y"})"});
  rec = c.lookup(s, "k");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->state, KeyState::Completed);
  EXPECT_TRUE(rec->completed_at.has_value());
  EXPECT_FALSE(rec->locked_until.has_value());
  ASSERT_TRUE(rec->response.has_value());
  EXPECT_EQ(rec->response->status, 202);
  EXPECT_EQ(rec->response->body, "b");
}

TEST(Sweep, DeletesExpiredRowsButNotRunningLeases) {
  Client c(conninfo(), test_options());
  Conn raw;
  const auto s = unique_scope();
  auto done = c.claim(s, "done", {std::nullopt, 200ms, std::nullopt, std::nullopt});
  c.finish(s, "done", *done.token, {200, "", ""});
  c.claim(s, "running", {std::nullopt, 200ms, 60s, std::nullopt});
  std::this_thread::sleep_for(500ms);
  EXPECT_GE(c.sweep(), 0);  // the background sweeper may have been first
  EXPECT_GE(c.sweep(100), 0);
  EXPECT_EQ(raw.query("SELECT count(*) FROM idempotency.keys WHERE scope = $1 AND key = 'done'", {s}), "0");
  EXPECT_EQ(raw.query("SELECT count(*) FROM idempotency.keys WHERE scope = $1 AND key = 'running'", {s}), "1");
  EXPECT_SQLSTATE(c.sweep(0), "22023");
  EXPECT_SQLSTATE(c.sweep(-5), "22023");
}

TEST(Fingerprint, CanonicalJsonDigest) {
  Client c(conninfo(), test_options());
  const auto a = c.fingerprint(R"({"amount": 100, "currency": "EUR"})");
  const auto b = c.fingerprint("{ \"currency\":\"EUR\",\n \"amount\":100 }");
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c.fingerprint(R"({"amount": 101, "currency": "EUR"})"));
  EXPECT_SQLSTATE(c.fingerprint("{not json"), "22P02");
  // claim_json() gives the same digest in one round trip.
  const auto s = unique_scope();
  auto r = c.claim_json(s, "k", "{\"currency\": \"EUR\", \"amount\": 100}");
  ASSERT_TRUE(r.claimed());
  EXPECT_EQ(c.lookup(s, "k")->fingerprint.value_or(""), a);
  EXPECT_EQ(c.claim(s, "k", {a, std::nullopt, std::nullopt, std::nullopt}).outcome, Outcome::InProgress);
  EXPECT_EQ(c.claim_json(s, "k", R"({"amount": 5, "currency": "EUR"})").outcome, Outcome::Mismatch);
  EXPECT_SQLSTATE(c.claim_json(s, "k2", "nope"), "22P02");
  auto e = c.execute_json(s, "k3", R"({"a": [1, 2]})", [](PGconn*) { return Response{200, "j", ""}; });
  EXPECT_EQ(e.outcome, Outcome::Claimed);
  EXPECT_EQ(c.execute_json(s, "k3", R"({ "a":[1,2] })",
                           [](PGconn*) {
                             return Response{500, "", ""};
                           })
                .outcome,
            Outcome::Replay);
}

// ---- argument errors ---------------------------------------------------------

TEST(Errors, InvalidArgumentsAre22023) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  EXPECT_SQLSTATE(c.claim("", "k"), "22023");
  EXPECT_SQLSTATE(c.claim(s, ""), "22023");
  EXPECT_SQLSTATE(c.claim(s, std::string(256, 'k')), "22023");
  EXPECT_SQLSTATE(c.claim(std::string(256, 's'), "k"), "22023");
  EXPECT_SQLSTATE(c.claim(s, "k", {std::string(65, 'f'), std::nullopt, std::nullopt, std::nullopt}), "22023");
  EXPECT_SQLSTATE(c.claim(s, "k", {std::nullopt, 0ms, std::nullopt, std::nullopt}), "22023");
  EXPECT_SQLSTATE(c.claim(s, "k", {std::nullopt, -1s, std::nullopt, std::nullopt}), "22023");
  EXPECT_SQLSTATE(c.claim(s, "k", {std::nullopt, std::nullopt, 0ms, std::nullopt}), "22023");
  EXPECT_SQLSTATE(c.claim(s, "k", {std::nullopt, std::nullopt, std::nullopt, -1ms}), "22023");
  EXPECT_FALSE(c.lookup(s, "k").has_value());  // errors change nothing
  // The limits themselves are fine.
  EXPECT_TRUE(
      c.claim(s, std::string(255, 'k'), {std::string(64, 'f'), std::nullopt, std::nullopt, std::nullopt}).claimed());
  EXPECT_TRUE(c.claim(std::string(255, 's'), "k-" + s).claimed());
}

TEST(Errors, InvalidUtf8OrNulInTextIsAnErrorNotTruncation) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  try {
    c.claim(s, std::string("a\0b", 3));
    ADD_FAILURE() << "a key with a NUL byte was accepted";
  } catch (const Error& e) {
    EXPECT_FALSE(e.sqlstate().empty());
    EXPECT_FALSE(e.connection_error());
  }
  EXPECT_FALSE(c.lookup(s, "a").has_value());
}

TEST(Errors, ResponseLargerThanMaxResponseSizeIs54000) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto r = c.claim(s, "k");
  EXPECT_SQLSTATE(c.finish(s, "k", *r.token, {200, std::string(1024 * 1024 + 1, 'x'), ""}), "54000");
  // body + headers together count
  EXPECT_SQLSTATE(
      c.finish(s, "k", *r.token,
               {200, std::string(1024 * 1024 - 10, 'x'), R"({"X-Padding": "0123456789012345678901234567890"})"}),
      "54000");
  auto rec = c.lookup(s, "k");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->state, KeyState::InProgress);
  EXPECT_TRUE(c.finish(s, "k", *r.token, {200, "small", ""}));
}

TEST(Errors, RoleWithoutPrivilegesIs42501) {
  Conn admin;
  std::string state;
  admin.query("CREATE ROLE idempotency_cxx_noperm LOGIN", {}, &state);  // may exist already
  std::unique_ptr<Client> c;
  try {
    c = std::make_unique<Client>(conninfo() + " user=idempotency_cxx_noperm", test_options());
  } catch (const Error& e) {
    GTEST_SKIP() << "cannot log in as a second role here: " << e.what();
  }
  EXPECT_SQLSTATE(c->claim(unique_scope(), "k"), "42501");
}

TEST(Errors, LostConnectionIsAnErrorNotAnOutcome) {
  // Behind a pooler the client's connection ends at the pooler, which hides
  // the server process (and its pid) from us.
  if (pooled()) GTEST_SKIP() << "direct connections only";
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  ASSERT_TRUE(c.claim(s, "k").claimed());
  Conn killer;
  // Waits (up to 10 s) until the backend is gone.
  killer.exec("SELECT pg_terminate_backend(" + std::to_string(PQbackendPID(c.connection())) + ", 10000)");
  try {
    c.claim(s, "k");
    ADD_FAILURE() << "claim on a terminated connection returned an outcome";
  } catch (const Error& e) {
    EXPECT_TRUE(e.connection_error()) << e.sqlstate() << " " << e.what();
    EXPECT_EQ(e.sqlstate(), "08006");
  }
  // And stays an error, also for execute().
  EXPECT_SQLSTATE(c.execute(s, "k2", std::nullopt, [](PGconn*) { return Response{200, "", ""}; }), "08006");
}

TEST(Errors, CannotConnectIs08001) {
  EXPECT_SQLSTATE(Client("host=/nonexistent-dir port=1 connect_timeout=2"), "08001");
}

TEST(Errors, MovedFromClientIs08003) {
  Client a(conninfo(), test_options());
  Client b(std::move(a));
  EXPECT_SQLSTATE(a.claim(unique_scope(), "k"), "08003");  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(b.claim(unique_scope(), "k").claimed());
}

TEST(Statements, SurviveDiscardAll) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  ASSERT_TRUE(c.claim(s, "a").claimed());
  PQclear(PQexec(c.connection(), "DISCARD ALL"));  // what a connection pool may do
  EXPECT_TRUE(c.claim(s, "b").claimed());
  PQclear(PQexec(c.connection(), "DEALLOCATE ALL"));
  EXPECT_TRUE(c.lookup(s, "a").has_value());
}

TEST(Statements, SurviveDropAndCreateExtension) {
  // A database of its own: dropping the extension must not disturb other tests.
  const std::string db = "idempotency_cxx_drop_" + std::to_string(getpid());
  Conn admin("dbname=postgres");
  admin.exec("DROP DATABASE IF EXISTS " + db);
  admin.exec("CREATE DATABASE " + db);
  {
    Conn setup("dbname=" + db);
    setup.exec("CREATE EXTENSION pg_idempotency");
    Client c("dbname=" + db, test_options());
    auto r = c.claim("s", "k");
    ASSERT_TRUE(r.claimed());
    c.finish("s", "k", *r.token, {200, "before", ""});
    setup.exec("DROP EXTENSION pg_idempotency");
    EXPECT_THROW(c.claim("s", "k"), Error);
    setup.exec("CREATE EXTENSION pg_idempotency");
    auto again = c.claim("s", "k");  // same Client, same prepared statements
    EXPECT_EQ(again.outcome, Outcome::Claimed);
    EXPECT_TRUE(c.finish("s", "k", *again.token, {200, "after", ""}));
    EXPECT_EQ(c.lookup("s", "k")->response->body, "after");
  }
  // WITH (FORCE): a pooler may still hold an idle server connection to it.
  admin.exec("DROP DATABASE " + db + " WITH (FORCE)");
}

// ---- borrow mode -----------------------------------------------------------------

TEST(Borrow, ClaimJoinsCallerTransactionAndRollsBackWithIt) {
  Conn caller;
  Client c(caller.get(), test_options());
  EXPECT_FALSE(c.owns_connection());
  Client observer(conninfo(), test_options());
  const auto s = unique_scope();
  caller.exec("BEGIN");
  caller.query("INSERT INTO cxx_work VALUES ($1, 'side effect')", {s});
  auto r = c.claim(s, "k");
  ASSERT_TRUE(r.claimed());
  EXPECT_TRUE(c.finish(s, "k", *r.token, {200, "x", ""}));
  EXPECT_FALSE(observer.lookup(s, "k").has_value());  // not committed yet
  caller.exec("ROLLBACK");
  EXPECT_FALSE(observer.lookup(s, "k").has_value());
  EXPECT_EQ(notes(caller, s), 0);
  EXPECT_EQ(observer.claim(s, "k").outcome, Outcome::Claimed);  // as if never claimed
}

TEST(Borrow, ClaimCommitsWithCallerTransaction) {
  Conn caller;
  Client c(caller.get(), test_options());
  Client observer(conninfo(), test_options());
  const auto s = unique_scope();
  caller.exec("BEGIN");
  auto r = c.claim(s, "k");
  c.finish(s, "k", *r.token, {200, "x", ""});
  caller.exec("COMMIT");
  auto seen = observer.claim(s, "k");
  EXPECT_EQ(seen.outcome, Outcome::Replay);
  EXPECT_EQ(seen.response->body, "x");
}

TEST(Borrow, SeveralClientsOnOneConnectionShareStatements) {
  Conn caller;
  const auto s = unique_scope();
  caller.exec("BEGIN");
  {
    Client a(caller.get(), test_options());
    EXPECT_TRUE(a.claim(s, "a").claimed());
  }
  {
    Client b(caller.get(), test_options());  // must not PREPARE the same names again (that would abort the transaction)
    EXPECT_TRUE(b.claim(s, "b").claimed());
    EXPECT_TRUE(b.lookup(s, "a").has_value());
  }
  caller.exec("COMMIT");
}

TEST(Borrow, ExecuteJoinsCallerTransaction) {
  Conn caller;
  Client c(caller.get(), test_options());
  Client observer(conninfo(), test_options());
  const auto s = unique_scope();
  caller.exec("BEGIN");
  caller.query("INSERT INTO cxx_work VALUES ($1, 'before')", {s});
  auto r = c.execute(s, "k", std::nullopt, [&](PGconn* conn) { return note_handler_response(conn, s, "inside"); });
  EXPECT_EQ(r.outcome, Outcome::Claimed);
  EXPECT_EQ(PQtransactionStatus(caller.get()), PQTRANS_INTRANS);  // still the caller's transaction
  EXPECT_FALSE(observer.lookup(s, "k").has_value());
  caller.exec("ROLLBACK");
  EXPECT_EQ(notes(caller, s), 0);
  EXPECT_FALSE(observer.lookup(s, "k").has_value());

  caller.exec("BEGIN");
  c.execute(s, "k", std::nullopt, [&](PGconn* conn) { return note_handler_response(conn, s, "inside"); });
  caller.exec("COMMIT");
  EXPECT_EQ(notes(caller, s), 1);
  EXPECT_EQ(observer.claim(s, "k").outcome, Outcome::Replay);
}

TEST(Borrow, ThrowingHandlerRollsBackToSavepointOnly) {
  Conn caller;
  Client c(caller.get(), test_options());
  const auto s = unique_scope();
  caller.exec("BEGIN");
  caller.query("INSERT INTO cxx_work VALUES ($1, 'before')", {s});
  EXPECT_THROW(c.execute(s, "k", std::nullopt,
                         [&](PGconn* conn) -> Response {
                           note_handler_response(conn, s, "inside");
                           throw std::logic_error("boom");
                         }),
               std::logic_error);
  EXPECT_EQ(PQtransactionStatus(caller.get()), PQTRANS_INTRANS);
  EXPECT_EQ(notes(caller, s), 1);  // the caller's own work survives
  EXPECT_FALSE(c.lookup(s, "k").has_value());
  caller.exec("COMMIT");
  EXPECT_EQ(notes(caller, s), 1);
  Client observer(conninfo(), test_options());
  EXPECT_EQ(observer.claim(s, "k").outcome, Outcome::Claimed);
}

TEST(Borrow, IdleConnectionGetsItsOwnTransaction) {
  Conn caller;
  Client c(caller.get(), test_options());
  const auto s = unique_scope();
  auto r = c.execute(s, "k", std::nullopt, [&](PGconn* conn) { return note_handler_response(conn, s, "x"); });
  EXPECT_EQ(r.outcome, Outcome::Claimed);
  EXPECT_EQ(PQtransactionStatus(caller.get()), PQTRANS_IDLE);
  Client observer(conninfo(), test_options());
  EXPECT_EQ(observer.claim(s, "k").outcome, Outcome::Replay);
}

TEST(Borrow, FailedCallerTransactionIs25P02) {
  Conn caller;
  Client c(caller.get(), test_options());
  const auto s = unique_scope();
  caller.exec("BEGIN");
  std::string state;
  caller.query("SELECT 1/0", {}, &state);
  EXPECT_EQ(state, "22012");
  bool ran = false;
  EXPECT_SQLSTATE(c.execute(s, "k", std::nullopt,
                            [&](PGconn*) {
                              ran = true;
                              return Response{200, "", ""};
                            }),
                  "25P02");
  EXPECT_SQLSTATE(c.claim(s, "k"), "25P02");
  EXPECT_FALSE(ran);
  caller.exec("ROLLBACK");
}

// ---- execute -----------------------------------------------------------------------

TEST(Execute, RunsHandlerOnceThenReplays) {
  Client c(conninfo(), test_options());
  Conn raw;
  const auto s = unique_scope();
  int runs = 0;
  auto handler = [&](PGconn* conn) {
    ++runs;
    return note_handler_response(conn, s, "payment");
  };
  auto first = c.execute(s, "k", std::string("fp"), handler);
  EXPECT_EQ(first.outcome, Outcome::Claimed);
  ASSERT_TRUE(first.response.has_value());
  EXPECT_EQ(first.response->status, 201);
  EXPECT_EQ(first.response->body, "created payment");
  EXPECT_EQ(to_http(first).status, 201);
  auto second = c.execute(s, "k", std::string("fp"), handler);
  EXPECT_EQ(second.outcome, Outcome::Replay);
  ASSERT_TRUE(second.response.has_value());
  EXPECT_EQ(second.response->status, 201);
  EXPECT_EQ(second.response->body, first.response->body);
  auto http = to_http(second);
  EXPECT_EQ(http.status, 201);
  EXPECT_EQ(http.body, "created payment");
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(notes(raw, s), 1);
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
}

TEST(Execute, ThrowingHandlerRollsBackEverythingAndRethrows) {
  Client c(conninfo(), test_options());
  Conn raw;
  const auto s = unique_scope();
  struct Boom : std::runtime_error {
    Boom() : std::runtime_error("boom") {}
  };
  EXPECT_THROW(c.execute(s, "k", std::nullopt,
                         [&](PGconn* conn) -> Response {
                           note_handler_response(conn, s, "half done");
                           throw Boom();
                         }),
               Boom);
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  EXPECT_EQ(notes(raw, s), 0);
  EXPECT_FALSE(c.lookup(s, "k").has_value());
  int runs = 0;
  auto r = c.execute(s, "k", std::nullopt, [&](PGconn* conn) {
    ++runs;
    return note_handler_response(conn, s, "retry");
  });
  EXPECT_EQ(r.outcome, Outcome::Claimed);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(notes(raw, s), 1);
}

TEST(Execute, HandlerThatBreaksTheTransactionIsAnError) {
  Client c(conninfo(), test_options());
  Conn raw;
  const auto s = unique_scope();
  EXPECT_SQLSTATE(c.execute(s, "k", std::nullopt,
                            [&](PGconn* conn) {
                              note_handler_response(conn, s, "x");
                              PQclear(PQexec(conn, "SELECT 1/0"));  // swallowed by the handler
                              return Response{200, "", ""};
                            }),
                  "25P02");
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
  EXPECT_EQ(notes(raw, s), 0);
  EXPECT_FALSE(c.lookup(s, "k").has_value());
}

TEST(Execute, TooLargeResponseRollsBackTheWork) {
  Client c(conninfo(), test_options());
  Conn raw;
  const auto s = unique_scope();
  EXPECT_SQLSTATE(c.execute(s, "k", std::nullopt,
                            [&](PGconn* conn) {
                              note_handler_response(conn, s, "x");
                              return Response{200, std::string(2 * 1024 * 1024, 'x'), ""};
                            }),
                  "54000");
  EXPECT_EQ(notes(raw, s), 0);
  EXPECT_FALSE(c.lookup(s, "k").has_value());
}

TEST(Execute, InProgressAndMismatchDoNotRunTheHandler) {
  Conn holder;
  Client borrowed(holder.get(), test_options());
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  bool ran = false;
  auto handler = [&](PGconn*) {
    ran = true;
    return Response{200, "", ""};
  };
  holder.exec("BEGIN");
  ASSERT_TRUE(borrowed.claim(s, "k", {std::string("A"), std::nullopt, std::nullopt, std::nullopt}).claimed());
  auto r = c.execute(s, "k", std::string("A"), handler);
  EXPECT_EQ(r.outcome, Outcome::InProgress);
  EXPECT_FALSE(r.response.has_value());
  EXPECT_EQ(to_http(r).status, 409);
  holder.exec("ROLLBACK");

  c.execute(s, "done", std::string("A"), handler);
  ran = false;
  r = c.execute(s, "done", std::string("B"), handler);
  EXPECT_EQ(r.outcome, Outcome::Mismatch);
  EXPECT_FALSE(r.response.has_value());
  EXPECT_EQ(to_http(r).status, 422);
  EXPECT_FALSE(ran);
  EXPECT_EQ(PQtransactionStatus(c.connection()), PQTRANS_IDLE);
}

TEST(Execute, HandlerSeesTakeoverRecoveryPointViaOptions) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  auto first = c.claim(s, "k", {std::nullopt, std::nullopt, 200ms, std::nullopt});
  c.checkpoint(s, "k", *first.token, "step-2", 200ms);
  std::this_thread::sleep_for(600ms);
  auto r = c.execute(s, "k", std::nullopt, [](PGconn*) { return Response{200, "resumed", ""}; });
  EXPECT_EQ(r.outcome, Outcome::Claimed);
  EXPECT_EQ(r.attempt, 2);
  EXPECT_EQ(r.recovery_point.value_or(""), "step-2");
}

// ---- binary bodies ---------------------------------------------------------------

TEST(Binary, BodyWithNulBytesRoundTrips) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  const std::string body = std::string("\0\0head\0", 7) + bytes_0_to_255(4096) + std::string(3, '\0');
  auto r = c.claim(s, "k");
  c.finish(s, "k", *r.token, {200, body, ""});
  auto again = c.claim(s, "k");
  ASSERT_TRUE(again.response.has_value());
  EXPECT_EQ(again.response->body.size(), body.size());
  EXPECT_EQ(again.response->body, body);
  EXPECT_EQ(c.lookup(s, "k")->response->body, body);
  EXPECT_EQ(to_http(again).body, body);
}

TEST(Binary, OneMegabyteBody) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  std::mt19937 rng(42);
  std::string body(1000 * 1000, '\0');
  for (auto& ch : body) ch = static_cast<char>(rng() & 0xff);
  const std::string headers = R"({"Content-Type": "application/octet-stream"})";
  auto r = c.execute(s, "k", std::nullopt, [&](PGconn*) { return Response{200, body, headers}; });
  ASSERT_EQ(r.outcome, Outcome::Claimed);
  auto again = c.claim(s, "k");
  ASSERT_EQ(again.outcome, Outcome::Replay);
  EXPECT_TRUE(again.response->body == body);
  EXPECT_EQ(parse_headers_json(again.response->headers_json).at(0).second, "application/octet-stream");
  // Exactly max_response_size (1 MB, no headers) is not larger than the limit.
  std::string at_limit(1024 * 1024, '\0');
  for (auto& ch : at_limit) ch = static_cast<char>(rng() & 0xff);
  auto lim = c.claim(s, "limit");
  EXPECT_TRUE(c.finish(s, "limit", *lim.token, {200, at_limit, ""}));
  EXPECT_TRUE(c.claim(s, "limit").response->body == at_limit);
}

TEST(Binary, LargerBodiesWithRaisedLimit) {
  Client c(conninfo(), test_options());
  const auto s = unique_scope();
  PQclear(PQexec(c.connection(), "SET idempotency.max_response_size = '8MB'"));
  const std::string body = bytes_0_to_255(3 * 1024 * 1024);
  auto r = c.claim(s, "k");
  EXPECT_TRUE(c.finish(s, "k", *r.token, {200, body, ""}));
  EXPECT_TRUE(c.claim(s, "k").response->body == body);
}

// ---- concurrency -----------------------------------------------------------------

namespace {
void hammer(bool wait, int threads, int keys, int rounds) {
  const auto s = unique_scope();
  std::vector<std::atomic<int>> runs(keys);
  std::atomic<int> claimed{0}, replays{0}, in_progress{0}, other{0}, errors{0};
  std::vector<std::thread> pool;
  std::atomic<int> ready{0};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        Client c(conninfo(), test_options());
        std::vector<int> order(keys);
        for (int i = 0; i < keys; ++i) order[i] = i;
        std::mt19937 rng(static_cast<unsigned>(t));
        ++ready;
        while (ready.load() < threads) std::this_thread::yield();
        for (int round = 0; round < rounds; ++round) {
          std::shuffle(order.begin(), order.end(), rng);
          for (int k : order) {
            ClaimOptions o;
            o.fingerprint = "fp-" + std::to_string(k);
            if (wait) o.wait = 10s;
            auto r = c.execute(s, "key-" + std::to_string(k), o, [&, k](PGconn*) {
              runs[k]++;
              std::this_thread::sleep_for(2ms);
              return Response{200, "result-" + std::to_string(k), ""};
            });
            switch (r.outcome) {
              case Outcome::Claimed:
                ++claimed;
                break;
              case Outcome::Replay:
                ++replays;
                if (r.response->body != "result-" + std::to_string(k)) ++other;
                break;
              case Outcome::InProgress:
                ++in_progress;
                break;
              default:
                ++other;
            }
          }
        }
      } catch (const std::exception& e) {
        ++errors;
        ADD_FAILURE() << "thread " << t << ": " << e.what();
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(claimed.load(), keys);
  for (int k = 0; k < keys; ++k) EXPECT_EQ(runs[k].load(), 1) << "key " << k;
  EXPECT_EQ(claimed + replays + in_progress, threads * keys * rounds);
  if (wait) {
    EXPECT_EQ(in_progress.load(), 0);
  }
  Client c(conninfo(), test_options());
  for (int k = 0; k < keys; ++k) {
    auto r = c.claim(s, "key-" + std::to_string(k));
    EXPECT_EQ(r.outcome, Outcome::Replay);
  }
}
}  // namespace

TEST(Concurrency, ManyThreadsOneHandlerRunPerKey) { hammer(false, 8, 40, 3); }

TEST(Concurrency, ManyThreadsWithWaitAllGetTheResult) { hammer(true, 8, 20, 2); }

TEST(Concurrency, SimultaneousRawClaimsExactlyOneWinner) {
  const int threads = 8, keys = 30;
  const auto s = unique_scope();
  std::vector<std::atomic<int>> winners(keys);
  std::vector<std::thread> pool;
  std::atomic<int> ready{0};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      Client c(conninfo(), test_options());
      ++ready;
      while (ready.load() < threads) std::this_thread::yield();
      for (int k = 0; k < keys; ++k) {
        try {
          auto r = c.claim(s, "k" + std::to_string(k));
          if (r.claimed()) {
            winners[k]++;
          } else {
            EXPECT_EQ(r.outcome, Outcome::InProgress);
          }
        } catch (const std::exception& e) {
          ADD_FAILURE() << e.what();
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int k = 0; k < keys; ++k) EXPECT_EQ(winners[k].load(), 1) << "key " << k;
}
