// The observer interface (<idempotency/observer.hpp>) with a recording
// observer: what a Client reports about each SQL call and what the middleware
// reports about each request, against a real server and real HTTP.
#include <cstdio>
#include <mutex>

#include "observe_fixture.hpp"

using namespace observe_fixture;
using idempotency::RequestOutcome;

namespace {

[[maybe_unused]] auto* const g_env = ::testing::AddGlobalTestEnvironment(new Env);

struct SeenCall {
  std::string function, sqlstate;
  std::chrono::steady_clock::duration duration;
};
struct SeenRequest {
  std::string method, path, traceparent, own_trace_context;
  std::optional<RequestOutcome> outcome;
  int status = 0, attempt = 0;
  std::string scope, key_hash, key, error_type;
  std::optional<std::string> stored_trace_context;
  std::optional<std::chrono::system_clock::duration> age;
  std::chrono::steady_clock::duration duration{};
};

class Recorder : public idempotency::Observer {
 public:
  explicit Recorder(bool raw_key = false, bool age = false) : raw_key_(raw_key), age_(age) {}
  void sql_call(const idempotency::SqlCall& c) noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    calls.push_back({std::string(c.function), std::string(c.sqlstate), c.duration});
  }
  std::unique_ptr<idempotency::RequestObservation> request_started(const idempotency::RequestStart& s) override {
    return std::make_unique<Observation>(this, s, age_);
  }
  bool wants_raw_key() const noexcept override { return raw_key_; }

  std::vector<SeenRequest> requests_seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests;
  }
  std::vector<SeenCall> calls_seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls;
  }

 private:
  struct Observation : idempotency::RequestObservation {
    Observation(Recorder* r, const idempotency::RequestStart& s, bool age) : recorder(r), age(age) {
      seen.method = s.method;
      seen.path = s.path;
      seen.traceparent = s.traceparent;
    }
    void record_end(const idempotency::RequestEnd& e) noexcept {
      seen.outcome = e.outcome;
      seen.status = e.status;
      seen.attempt = e.attempt;
      seen.scope = e.scope;
      seen.key_hash = e.key_hash;
      seen.key = e.key;
      seen.error_type = e.error_type;
      seen.stored_trace_context = e.stored_trace_context;
      seen.age = e.first_execution_age;
      seen.duration = e.duration;
      std::lock_guard<std::mutex> lock(recorder->mutex_);
      recorder->requests.push_back(seen);
    }
    bool wants_first_execution_age() const override { return age; }
    // Each request its own W3C traceparent: 00-<32 hex>-<16 hex>-01.
    std::optional<std::string> trace_context() const override {
      static std::atomic<unsigned> n{0};
      if (traceparent_.empty()) {
        char span[17];
        std::snprintf(span, sizeof span, "%016x", ++n);
        traceparent_ = "00-4bf92f3577b34da6a3ce929d0e0e4736-" + std::string(span) + "-01";
      }
      return traceparent_;
    }
    void ended(const idempotency::RequestEnd& e) noexcept override {
      seen.own_trace_context = traceparent_;
      record(e);
    }
    void record(const idempotency::RequestEnd& e) noexcept;
    Recorder* recorder;
    bool age;
    mutable std::string traceparent_;
    SeenRequest seen;
  };
  bool raw_key_, age_;
  std::mutex mutex_;
  std::vector<SeenCall> calls;
  std::vector<SeenRequest> requests;
};

void Recorder::Observation::record(const idempotency::RequestEnd& e) noexcept { record_end(e); }

}  // namespace

TEST(KeyHash, IsSha256InLowerCaseHex) {
  EXPECT_EQ(idempotency::key_hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(idempotency::key_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the padding needs a second block.
  EXPECT_EQ(idempotency::key_hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // 112 bytes: two whole blocks of input, then the padding.
  EXPECT_EQ(idempotency::key_hash("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                                  "lmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(ObservedClient, EverySqlCallIsReportedWithItsFunctionAndFailuresWithTheirSqlstate) {
  auto recorder = std::make_shared<Recorder>();
  auto options = test_env::test_options();
  options.observer = recorder;
  idempotency::Client c(test_env::conninfo(), options);
  const auto key = unique("k");
  auto r = c.claim("s", key);
  ASSERT_TRUE(r.claimed());
  EXPECT_TRUE(c.finish("s", key, *r.token, {201, "ok", ""}));
  try {
    c.finish("s", key, *r.token, {500, "other", ""});
    ADD_FAILURE() << "a different second finish must fail";
  } catch (const idempotency::Error& e) {
    EXPECT_EQ(e.sqlstate(), "IK002");
  }
  c.execute("s", unique("k"), std::nullopt, [](PGconn*) { return idempotency::Response{200, "x", ""}; });
  c.lookup("s", key);
  auto calls = recorder->calls_seen();
  std::vector<std::string> names, states;
  for (const auto& call : calls) {
    names.push_back(call.function);
    states.push_back(call.sqlstate);
    EXPECT_GT(call.duration.count(), 0);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"idempotency.claim", "idempotency.finish", "idempotency.finish",
                                             "idempotency.claim", "idempotency.finish", "idempotency.lookup"}));
  EXPECT_EQ(states, (std::vector<std::string>{"", "", "IK002", "", "", ""}));
}

TEST(ObservedMiddleware, OutcomesScopeAttemptAndKeyHashOfEachRequest) {
  auto recorder = std::make_shared<Recorder>();
  const auto key = unique("pay");
  {
    PaymentService service(recorder);
    ASSERT_EQ(service.pay(key, R"({"amount": 100})")->status, 201);  // claimed
    ASSERT_EQ(service.pay(key, R"({"amount": 100})")->status, 201);  // replay
    ASSERT_EQ(service.pay(key, R"({"amount": 999})")->status, 422);  // mismatch
    ASSERT_EQ(service.pay("", R"({"amount": 100})")->status, 400);   // rejected: no key
    ASSERT_EQ(service.pay(unique("r"), "{}", "?reject=1")->status, 400);  // rejected by the handler
    ASSERT_EQ(service.pay(unique("f"), "{}", "?status=503")->status, 503);  // failed: no outcome
    const auto busy = unique("busy");
    std::thread first([&] { service.pay(busy, "{}", "?delay_ms=1500"); });
    const bool running = service.wait_for_handler();
    const auto dup = service.pay(busy, "{}");
    first.join();
    ASSERT_TRUE(running);
    ASSERT_EQ(dup->status, 409);  // in_progress
  }
  auto seen = recorder->requests_seen();
  ASSERT_EQ(seen.size(), 8u);
  std::vector<std::optional<RequestOutcome>> outcomes;
  for (const auto& r : seen) outcomes.push_back(r.outcome);
  const std::vector<std::optional<RequestOutcome>> expected = {
      RequestOutcome::Claimed,  RequestOutcome::Replay,     RequestOutcome::Mismatch, RequestOutcome::Rejected,
      RequestOutcome::Rejected, std::nullopt,                RequestOutcome::InProgress, RequestOutcome::Claimed};
  EXPECT_EQ(outcomes, expected);  // the in-flight duplicate ends before the request it waited on
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].path, "/payments");
  EXPECT_EQ(seen[0].scope, "tenant:observed");
  EXPECT_EQ(seen[0].attempt, 1);
  EXPECT_EQ(seen[0].status, 201);
  EXPECT_EQ(seen[0].key_hash, idempotency::key_hash(key));
  EXPECT_EQ(seen[1].key_hash, idempotency::key_hash(key));
  EXPECT_TRUE(seen[0].key.empty()) << "the raw key is recorded only when the observer asks for it";
  EXPECT_FALSE(seen[1].age) << "the age of the first execution only when asked for";
  EXPECT_TRUE(seen[3].key_hash.empty());
  EXPECT_EQ(seen[5].status, 503);
  EXPECT_EQ(seen[5].error_type, "503");
  EXPECT_EQ(seen[6].status, 409);
  for (const auto& r : seen) EXPECT_GT(r.duration.count(), 0);
}

TEST(ObservedMiddleware, RawKeyAndFirstExecutionAgeWhenTheObserverAsks) {
  auto recorder = std::make_shared<Recorder>(/*raw_key=*/true, /*age=*/true);
  const auto key = unique("pay");
  {
    PaymentService service(recorder);
    ASSERT_EQ(service.pay(key, R"({"amount": 1})")->status, 201);
    std::this_thread::sleep_for(50ms);  // an age the replay can tell from zero
    ASSERT_EQ(service.pay(key, R"({"amount": 1})")->status, 201);
  }
  auto seen = recorder->requests_seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].key, key);
  EXPECT_EQ(seen[1].key, key);
  EXPECT_FALSE(seen[0].age);
  ASSERT_TRUE(seen[1].age);
  EXPECT_GE(*seen[1].age, std::chrono::milliseconds(50));
  EXPECT_LT(*seen[1].age, std::chrono::minutes(5));
}

TEST(ObservedMiddleware, TheClaimStoresTheRequestsTraceContextAndReplaysAndDuplicatesGetIt) {
  auto recorder = std::make_shared<Recorder>();
  const auto key = unique("pay");
  {
    PaymentService service(recorder);
    std::thread first([&] { service.pay(key, "{}", "?delay_ms=1000"); });
    const bool running = service.wait_for_handler();
    ASSERT_EQ(service.pay(key, "{}")->status, 409);
    first.join();
    ASSERT_TRUE(running);
    ASSERT_EQ(service.pay(key, "{}")->status, 201);
    ASSERT_EQ(service.pay(key, R"({"other": 1})")->status, 422);
  }
  auto seen = recorder->requests_seen();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].outcome, RequestOutcome::InProgress);
  EXPECT_EQ(seen[1].outcome, RequestOutcome::Claimed);
  EXPECT_EQ(seen[2].outcome, RequestOutcome::Replay);
  EXPECT_EQ(seen[3].outcome, RequestOutcome::Mismatch);
  const std::string claimer = seen[1].own_trace_context;
  ASSERT_FALSE(claimer.empty());
  // The 409 cannot name the request holding the key: that claim has not committed, so its row (and
  // trace context) is not visible yet. (It can once the holder's claim is committed, e.g. a key
  // still leased after its holder's transaction committed a checkpoint.)
  EXPECT_TRUE(!seen[0].stored_trace_context || seen[0].stored_trace_context == claimer);
  EXPECT_EQ(seen[2].stored_trace_context, claimer);  // the replay names the request that did the work
  EXPECT_NE(seen[2].own_trace_context, claimer);
  EXPECT_FALSE(seen[1].stored_trace_context);
  EXPECT_FALSE(seen[3].stored_trace_context);
  EXPECT_EQ(sql("SELECT trace_context FROM idempotency.keys WHERE key = $1", {key}), claimer);
}
