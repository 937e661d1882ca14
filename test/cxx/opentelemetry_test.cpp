// The OpenTelemetry adapter (<idempotency/opentelemetry.hpp>) through the SDK's
// in-memory span and metric exporters: a retried payment as a trace (outcomes,
// the replay's link to the span that did the work, database spans) and as
// metrics. Built only where opentelemetry-cpp is installed. Each test runs in a
// process of its own (ctest), so the global providers start empty.
#include "idempotency/opentelemetry.hpp"

#include <iostream>
#include <map>
#include <mutex>

#include "observe_fixture.hpp"
#include "opentelemetry/exporters/memory/in_memory_metric_data.h"
#include "opentelemetry/exporters/memory/in_memory_metric_exporter_factory.h"
#include "opentelemetry/exporters/memory/in_memory_span_exporter.h"
#include "opentelemetry/sdk/metrics/export/periodic_exporting_metric_reader_factory.h"
#include "opentelemetry/sdk/metrics/meter_provider.h"
#include "opentelemetry/sdk/metrics/meter_provider_factory.h"
#include "opentelemetry/sdk/trace/simple_processor_factory.h"
#include "opentelemetry/sdk/trace/tracer_provider_factory.h"

using namespace observe_fixture;
namespace memory = opentelemetry::exporter::memory;
namespace sdktrace = opentelemetry::sdk::trace;
namespace sdkmetrics = opentelemetry::sdk::metrics;
namespace trace_api = opentelemetry::trace;

namespace {

[[maybe_unused]] auto* const g_env = ::testing::AddGlobalTestEnvironment(new Env);

// One exported span, flattened for the assertions.
struct Span {
  std::string name, trace_id, span_id, parent_id;
  trace_api::SpanKind kind;
  trace_api::StatusCode status;
  std::map<std::string, std::string> attributes;
  std::vector<std::pair<std::string, std::string>> links;  // (trace id, span id)
  bool has(const std::string& a) const { return attributes.count(a) > 0; }
  std::string at(const std::string& a) const { return has(a) ? attributes.at(a) : "<absent>"; }
};

template <typename Id>
std::string hex(const Id& id) {
  char buf[2 * Id::kSize + 1] = {};
  id.ToLowerBase16(opentelemetry::nostd::span<char, 2 * Id::kSize>(buf, 2 * Id::kSize));
  return std::string(buf, 2 * Id::kSize);
}

std::string text(const opentelemetry::sdk::common::OwnedAttributeValue& v) {
  if (auto s = opentelemetry::nostd::get_if<std::string>(&v)) return *s;
  if (auto i = opentelemetry::nostd::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = opentelemetry::nostd::get_if<double>(&v)) return std::to_string(*d);
  if (auto b = opentelemetry::nostd::get_if<bool>(&v)) return *b ? "true" : "false";
  return "<other>";
}

// The SDK with in-memory exporters as the global providers.
class Telemetry {
 public:
  Telemetry() {
    auto exporter = std::make_unique<memory::InMemorySpanExporter>();
    spans_ = exporter->GetData();
    std::shared_ptr<trace_api::TracerProvider> tracer_provider =
        sdktrace::TracerProviderFactory::Create(sdktrace::SimpleSpanProcessorFactory::Create(std::move(exporter)));
    trace_api::Provider::SetTracerProvider(opentelemetry::nostd::shared_ptr<trace_api::TracerProvider>(tracer_provider));

    metrics_ = std::make_shared<memory::SimpleAggregateInMemoryMetricData>();
    sdkmetrics::PeriodicExportingMetricReaderOptions every;
    every.export_interval_millis = std::chrono::milliseconds(3600 * 1000);  // only when flushed
    every.export_timeout_millis = std::chrono::milliseconds(5000);
    meter_provider_ = std::shared_ptr<sdkmetrics::MeterProvider>(sdkmetrics::MeterProviderFactory::Create());
    meter_provider_->AddMetricReader(sdkmetrics::PeriodicExportingMetricReaderFactory::Create(
        memory::InMemoryMetricExporterFactory::Create(metrics_), every));
    opentelemetry::metrics::Provider::SetMeterProvider(
        opentelemetry::nostd::shared_ptr<opentelemetry::metrics::MeterProvider>(meter_provider_));
  }

  // Every span ended so far (and forgets them).
  std::vector<Span> take_spans() {
    std::vector<Span> out;
    for (auto& s : spans_->GetSpans()) {
      Span span{std::string(s->GetName()), hex(s->GetTraceId()), hex(s->GetSpanId()),
                hex(s->GetParentSpanId()), s->GetSpanKind(), s->GetStatus(), {}, {}};
      for (const auto& [name, value] : s->GetAttributes()) span.attributes[name] = text(value);
      for (const auto& link : s->GetLinks()) {
        span.links.emplace_back(hex(link.GetSpanContext().trace_id()), hex(link.GetSpanContext().span_id()));
      }
      out.push_back(std::move(span));
    }
    return out;
  }

  // metric -> outcome -> value (counter: the sum; histogram: the count).
  std::map<std::string, uint64_t> by_outcome(const std::string& metric) {
    meter_provider_->ForceFlush();
    std::map<std::string, uint64_t> out;
    for (const auto& [attributes, point] : metrics_->Get("pg_idempotency", metric)) {
      std::string outcome = "<none>";
      for (const auto& [name, value] : attributes) {
        if (name == "pg_idempotency.outcome") outcome = text(value);
      }
      if (auto sum = opentelemetry::nostd::get_if<sdkmetrics::SumPointData>(&point)) {
        out[outcome] += static_cast<uint64_t>(opentelemetry::nostd::get<int64_t>(sum->value_));
      } else if (auto histogram = opentelemetry::nostd::get_if<sdkmetrics::HistogramPointData>(&point)) {
        out[outcome] += histogram->count_;
      }
    }
    return out;
  }

 private:
  std::shared_ptr<memory::InMemorySpanData> spans_;
  std::shared_ptr<memory::SimpleAggregateInMemoryMetricData> metrics_;
  std::shared_ptr<sdkmetrics::MeterProvider> meter_provider_;
};

const Span* find(const std::vector<Span>& spans, const std::string& name, const std::string& outcome = "") {
  for (const auto& s : spans) {
    if (s.name == name && (outcome.empty() || s.at("pg_idempotency.outcome") == outcome)) return &s;
  }
  return nullptr;
}

std::vector<const Span*> children(const std::vector<Span>& spans, const Span& parent) {
  std::vector<const Span*> out;
  for (const auto& s : spans) {
    if (s.parent_id == parent.span_id && s.trace_id == parent.trace_id) out.push_back(&s);
  }
  return out;
}

// The spans as a tree, one line each (docs/observability.md shows one).
void print_trace(const std::vector<Span>& spans, const Span& s, int depth = 0) {
  std::cout << std::string(2 * depth, ' ') << s.name << "  [trace " << s.trace_id << " span " << s.span_id << "]";
  for (const auto& [name, value] : s.attributes) std::cout << " " << name << "=" << value;
  for (const auto& [trace, span] : s.links) std::cout << " link->[trace " << trace << " span " << span << "]";
  std::cout << "\n";
  for (const Span* c : children(spans, s)) print_trace(spans, *c, depth + 1);
}

}  // namespace

TEST(OpenTelemetry, ARetriedPaymentAsTracesAndMetrics) {
  Telemetry telemetry;
  auto observer = std::make_shared<idempotency::otel::Observer>();
  const auto key = unique("pay");
  const std::string payment = R"({"amount": 100, "currency": "EUR"})";
  int first_status = 0;
  {
    PaymentService service(observer);
    // The payment (slow: a duplicate arrives while it runs), then the same request again, then another request
    // under the same key.
    std::thread first([&] { first_status = service.pay(key, payment, "?delay_ms=1000")->status; });
    const bool running = service.wait_for_handler();
    const int duplicate = service.pay(key, payment)->status;
    first.join();
    ASSERT_TRUE(running);
    EXPECT_EQ(first_status, 201);
    EXPECT_EQ(duplicate, 409);
    EXPECT_EQ(service.pay(key, payment)->status, 201);                  // the replay
    EXPECT_EQ(service.pay(key, R"({"amount": 999})")->status, 422);     // the mismatch
  }
  EXPECT_EQ(payments(key), 1);

  const auto spans = telemetry.take_spans();
  const Span* claimed = find(spans, "POST /payments", "claimed");
  const Span* in_progress = find(spans, "POST /payments", "in_progress");
  const Span* replay = find(spans, "POST /payments", "replay");
  const Span* mismatch = find(spans, "POST /payments", "mismatch");
  ASSERT_TRUE(claimed && in_progress && replay && mismatch) << spans.size() << " spans";
  for (const Span* s : {claimed, in_progress, replay, mismatch}) {
    EXPECT_EQ(s->kind, trace_api::SpanKind::kServer);
    EXPECT_EQ(s->at("pg_idempotency.scope"), "tenant:observed");
    EXPECT_EQ(s->at("pg_idempotency.key_hash"), idempotency::key_hash(key));
    EXPECT_FALSE(s->has("pg_idempotency.key")) << "the raw key only when asked for";
    EXPECT_EQ(s->at("http.request.method"), "POST");
    EXPECT_EQ(s->status, trace_api::StatusCode::kUnset) << "4xx leave a server span's status unset";
  }
  EXPECT_EQ(claimed->at("pg_idempotency.attempt"), "1");
  EXPECT_EQ(claimed->at("http.response.status_code"), "201");
  EXPECT_EQ(in_progress->at("http.response.status_code"), "409");
  EXPECT_EQ(mismatch->at("http.response.status_code"), "422");
  // Each request is a trace of its own (no incoming traceparent).
  EXPECT_NE(claimed->trace_id, replay->trace_id);

  // The replay links to the span that did the work.
  const Span* replay_link = find(spans, "pg_idempotency replay");
  ASSERT_TRUE(replay_link);
  EXPECT_EQ(replay_link->parent_id, replay->span_id);
  EXPECT_EQ(replay_link->trace_id, replay->trace_id);
  ASSERT_EQ(replay_link->links.size(), 1u);
  EXPECT_EQ(replay_link->links[0], std::make_pair(claimed->trace_id, claimed->span_id));
  EXPECT_TRUE(replay_link->has("pg_idempotency.first_execution.age"));
  EXPECT_GT(std::stod(replay_link->at("pg_idempotency.first_execution.age")), 0.0);
  EXPECT_LT(std::stod(replay_link->at("pg_idempotency.first_execution.age")), 300.0);
  // The 409 has no link here: the holder's claim had not committed, so its trace context was not
  // visible yet.
  EXPECT_EQ(find(spans, "pg_idempotency in_progress"), nullptr);
  EXPECT_EQ(find(spans, "pg_idempotency mismatch"), nullptr);

  // Database spans below the request's span.
  std::vector<std::string> calls;
  for (const Span* c : children(spans, *claimed)) {
    calls.push_back(c->name);
    EXPECT_EQ(c->kind, trace_api::SpanKind::kClient);
    EXPECT_EQ(c->at("db.system.name"), "postgresql");
    EXPECT_EQ(c->at("db.namespace"), test_env::db_name());
    EXPECT_EQ("SELECT " + c->at("db.stored_procedure.name"), c->name);
    EXPECT_FALSE(c->has("db.response.status_code"));
  }
  EXPECT_EQ(calls, (std::vector<std::string>{"SELECT idempotency.claim", "SELECT idempotency.finish"}));

  std::cout << "\n# the trace of each request (printed for docs/observability.md)\n";
  for (const Span* s : {claimed, in_progress, replay, mismatch}) print_trace(spans, *s);

  // One execution, one replay: replays are not counted as executions.
  const auto requests = telemetry.by_outcome("pg_idempotency.requests");
  EXPECT_EQ(requests, (std::map<std::string, uint64_t>{{"claimed", 1}, {"replay", 1}, {"in_progress", 1}, {"mismatch", 1}}));
  EXPECT_EQ(telemetry.by_outcome("pg_idempotency.request.duration"), requests);
}

TEST(OpenTelemetry, AnIncomingTraceparentIsTheParentAndIsWhatTheKeyStores) {
  Telemetry telemetry;
  auto observer = std::make_shared<idempotency::otel::Observer>();
  const auto key = unique("pay");
  const std::string trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", caller = "00f067aa0ba902b7";
  {
    PaymentService service(observer);
    EXPECT_EQ(service.pay(key, "{}", "", {{"traceparent", "00-" + trace_id + "-" + caller + "-01"}})->status, 201);
    EXPECT_EQ(service.pay(key, "{}")->status, 201);
  }
  const auto spans = telemetry.take_spans();
  const Span* claimed = find(spans, "POST /payments", "claimed");
  const Span* link = find(spans, "pg_idempotency replay");
  ASSERT_TRUE(claimed && link);
  EXPECT_EQ(claimed->trace_id, trace_id);
  EXPECT_EQ(claimed->parent_id, caller);
  ASSERT_EQ(link->links.size(), 1u);
  EXPECT_EQ(link->links[0], std::make_pair(trace_id, claimed->span_id));  // the server span, not the caller's
}

TEST(OpenTelemetry, AFailedCallIsADatabaseSpanWithItsSqlstate) {
  Telemetry telemetry;
  idempotency::ClientOptions options = test_env::test_options();
  options.observer = std::make_shared<idempotency::otel::Observer>();
  idempotency::Client c(test_env::conninfo(), options);
  const auto key = unique("k");
  auto r = c.claim("s", key);
  ASSERT_TRUE(r.claimed());
  c.finish("s", key, *r.token, {201, "ok", ""});
  EXPECT_THROW(c.finish("s", key, *r.token, {500, "other", ""}), idempotency::Error);
  const auto spans = telemetry.take_spans();
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_FALSE(spans[1].has("db.response.status_code"));
  EXPECT_EQ(spans[2].name, "SELECT idempotency.finish");
  EXPECT_EQ(spans[2].at("db.response.status_code"), "IK002");
  EXPECT_EQ(spans[2].at("error.type"), "IK002");
  EXPECT_EQ(spans[2].status, trace_api::StatusCode::kError);
}

TEST(OpenTelemetry, TheRawKeyOnlyWhenAskedFor) {
  Telemetry telemetry;
  idempotency::otel::Options options;
  options.record_raw_key = true;
  const auto key = unique("pay");
  {
    PaymentService service(std::make_shared<idempotency::otel::Observer>(options));
    EXPECT_EQ(service.pay(key, "{}")->status, 201);
  }
  const auto spans = telemetry.take_spans();
  const Span* claimed = find(spans, "POST /payments", "claimed");
  ASSERT_TRUE(claimed);
  EXPECT_EQ(claimed->at("pg_idempotency.key"), key);
}

TEST(OpenTelemetry, WithoutAnSdkTheObserverDoesNothing) {
  // No Telemetry: the API's no-op providers.
  auto observer = std::make_shared<idempotency::otel::Observer>();
  EXPECT_EQ(observer->request_started(idempotency::RequestStart{"POST", "/payments", "", ""}), nullptr);
  const auto key = unique("pay");
  PaymentService service(observer);
  EXPECT_EQ(service.pay(key, "{}")->status, 201);
  EXPECT_EQ(service.pay(key, "{}")->status, 201);
  // Nothing stored with the key: there was no span to link to.
  EXPECT_EQ(sql("SELECT coalesce(trace_context, '<none>') FROM idempotency.keys WHERE key = $1", {key}), "<none>");
}
