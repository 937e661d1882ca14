// <idempotency/opentelemetry.hpp> — OpenTelemetry traces and metrics for the
// client and the cpp-httplib middleware (an Observer, <idempotency/observer.hpp>).
//
// Header-only and optional: it uses opentelemetry-cpp's API only (Debian 13 and
// later: opentelemetry-cpp-dev); the application installs an SDK, its exporters
// and the global providers as usual, and links them. Without an SDK the API's
// no-op providers make every call a no-op.
//
//   auto otel = std::make_shared<idempotency::otel::Observer>();
//   idempotency::ClientOptions client;  client.observer = otel;      // database spans
//   idempotency::http::Options http;    http.observer = otel;        // server spans, metrics
//
// Traces. Each request through the middleware is a SERVER span ("POST /payments",
// HTTP server conventions; its parent is the incoming `traceparent`) carrying
//   pg_idempotency.outcome   claimed | replay | in_progress | mismatch | rejected
//   pg_idempotency.scope, pg_idempotency.attempt (claimed)
//   pg_idempotency.key_hash  lower-case hex SHA-256 of the key
//   pg_idempotency.key       only with Options::record_raw_key (keys can be sensitive)
// Each idempotency.* call is a CLIENT span below it ("SELECT idempotency.claim",
// database conventions: db.system.name = postgresql, db.stored_procedure.name,
// db.namespace, server.address/port, and db.response.status_code = the SQLSTATE and
// error.type on failure). The claim stores the server span's traceparent with the
// key; a replay (or a 409 while another request holds the key) adds an INTERNAL
// child span "pg_idempotency replay" ("... in_progress") with a span link to the
// span that did the work and pg_idempotency.first_execution.age (seconds since the
// stored answer was made).
//
// Metrics (meter "pg_idempotency"):
//   pg_idempotency.requests          counter, {request}
//   pg_idempotency.request.duration  histogram, s
// both by pg_idempotency.outcome (and error.type for a failed request).
//
// The providers are looked up when the Observer is made: install the SDK first.
// With the API's no-op providers (no SDK) the Observer does nothing at all.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "idempotency/observer.hpp"
#include "opentelemetry/common/attribute_value.h"
#include "opentelemetry/context/context.h"
#include "opentelemetry/context/propagation/text_map_propagator.h"
#include "opentelemetry/metrics/meter.h"
#include "opentelemetry/metrics/noop.h"
#include "opentelemetry/metrics/provider.h"
#include "opentelemetry/metrics/sync_instruments.h"
#include "opentelemetry/nostd/shared_ptr.h"
#include "opentelemetry/nostd/string_view.h"
#include "opentelemetry/nostd/unique_ptr.h"
#include "opentelemetry/trace/context.h"
#include "opentelemetry/trace/noop.h"
#include "opentelemetry/trace/propagation/http_trace_context.h"
#include "opentelemetry/trace/provider.h"
#include "opentelemetry/trace/scope.h"
#include "opentelemetry/trace/span.h"
#include "opentelemetry/trace/span_startoptions.h"
#include "opentelemetry/trace/tracer.h"

namespace idempotency::otel {

struct Options {
  // Record the raw key as pg_idempotency.key (off: only its hash).
  bool record_raw_key = false;
  // Look the key up on a replay for pg_idempotency.first_execution.age (one more
  // round trip, for replays whose span is recorded only).
  bool first_execution_age = true;
  // Store the request span's traceparent with the key, for the replays' links
  // (needs the extension at 1.2; false for a database still at 1.0 or 1.1).
  bool store_trace_context = true;
  // Instrumentation scope of the tracer and the meter.
  std::string instrumentation_name = "pg_idempotency";
  std::string instrumentation_version = "1.2";
};

namespace detail {

namespace trace_api = opentelemetry::trace;
namespace metrics_api = opentelemetry::metrics;
namespace nostd = opentelemetry::nostd;
using Attribute = std::pair<nostd::string_view, opentelemetry::common::AttributeValue>;

// A carrier for the two W3C Trace Context headers.
class TraceHeaders : public opentelemetry::context::propagation::TextMapCarrier {
 public:
  TraceHeaders() = default;
  TraceHeaders(std::string_view traceparent, std::string_view tracestate)
      : traceparent(traceparent), tracestate(tracestate) {}
  nostd::string_view Get(nostd::string_view name) const noexcept override {
    if (name == "traceparent") return traceparent;
    if (name == "tracestate") return tracestate;
    return "";
  }
  void Set(nostd::string_view name, nostd::string_view value) noexcept override {
    if (name == "traceparent") traceparent.assign(value.data(), value.size());
    if (name == "tracestate") tracestate.assign(value.data(), value.size());
  }
  std::string traceparent, tracestate;
};

// The context a traceparent (and tracestate) header names; invalid when malformed.
inline opentelemetry::context::Context context_of(std::string_view traceparent, std::string_view tracestate) {
  TraceHeaders carrier(traceparent, tracestate);
  opentelemetry::context::Context empty;
  return trace_api::propagation::HttpTraceContext().Extract(carrier, empty);
}

inline std::string traceparent_of(const nostd::shared_ptr<trace_api::Span>& span) {
  TraceHeaders carrier;
  opentelemetry::context::Context ctx;
  ctx = trace_api::SetSpan(ctx, span);
  trace_api::propagation::HttpTraceContext().Inject(carrier, ctx);
  return carrier.traceparent;
}

inline double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace detail

class Observer : public idempotency::Observer {
 public:
  explicit Observer(Options options = {}) : options_(std::move(options)) {
    tracer_ = detail::trace_api::Provider::GetTracerProvider()->GetTracer(options_.instrumentation_name,
                                                                          options_.instrumentation_version);
    auto meter_provider = detail::metrics_api::Provider::GetMeterProvider();
    auto meter = meter_provider->GetMeter(options_.instrumentation_name, options_.instrumentation_version);
    // The API's own no-op providers (no SDK installed before this Observer was made):
    // then nothing is built for them at all, not even attribute lists.
    tracing_ = dynamic_cast<detail::trace_api::NoopTracer*>(tracer_.get()) == nullptr;
    metering_ = dynamic_cast<detail::metrics_api::NoopMeterProvider*>(meter_provider.get()) == nullptr;
    requests_ = meter->CreateUInt64Counter("pg_idempotency.requests",
                                           "Requests with an idempotency key, by outcome", "{request}");
    duration_ = meter->CreateDoubleHistogram("pg_idempotency.request.duration",
                                             "Duration of requests with an idempotency key, by outcome", "s");
  }

  bool wants_raw_key() const noexcept override { return options_.record_raw_key; }

  void sql_call(const SqlCall& call) noexcept override {
    namespace trace_api = detail::trace_api;
    if (!tracing_) return;
    trace_api::StartSpanOptions start;
    start.kind = trace_api::SpanKind::kClient;
    start.start_system_time = opentelemetry::common::SystemTimestamp(call.start);
    const auto now = std::chrono::steady_clock::now();
    start.start_steady_time = opentelemetry::common::SteadyTimestamp(now - call.duration);
    const std::string name = "SELECT " + std::string(call.function);
    const char* database = call.connection ? PQdb(call.connection) : nullptr;
    const char* host = call.connection ? PQhost(call.connection) : nullptr;
    const char* port = call.connection ? PQport(call.connection) : nullptr;
    std::vector<detail::Attribute> attributes = {
        {"db.system.name", "postgresql"},
        {"db.operation.name", "SELECT"},
        {"db.stored_procedure.name", detail::nostd::string_view(call.function.data(), call.function.size())},
    };
    if (database && *database) attributes.emplace_back("db.namespace", database);
    if (host && *host) attributes.emplace_back("server.address", host);
    if (port && *port) attributes.emplace_back("server.port", static_cast<int64_t>(std::atoi(port)));
    const std::string state(call.sqlstate);
    if (!state.empty()) {
      attributes.emplace_back("db.response.status_code", state);
      attributes.emplace_back("error.type", state);
    }
    auto span = tracer_->StartSpan(name, attributes, start);
    if (!state.empty()) span->SetStatus(trace_api::StatusCode::kError, state);
    trace_api::EndSpanOptions end;
    end.end_steady_time = opentelemetry::common::SteadyTimestamp(now);
    span->End(end);
  }

  std::unique_ptr<RequestObservation> request_started(const RequestStart& request) override {
    if (!tracing_ && !metering_) return nullptr;
    return std::make_unique<Request>(this, request);
  }

 private:
  class Request : public RequestObservation {
   public:
    Request(Observer* observer, const RequestStart& request) : observer_(observer) {
      namespace trace_api = detail::trace_api;
      start_system_ = std::chrono::system_clock::now();
      start_steady_ = std::chrono::steady_clock::now();
      if (!observer_->tracing_) return;  // metrics only
      const std::string method(request.method), path(request.path);
      trace_api::StartSpanOptions start;
      start.kind = trace_api::SpanKind::kServer;
      start.start_system_time = opentelemetry::common::SystemTimestamp(start_system_);
      start.start_steady_time = opentelemetry::common::SteadyTimestamp(start_steady_);
      // The caller's trace, when the request came with one; otherwise a new one.
      if (!request.traceparent.empty()) start.parent = detail::context_of(request.traceparent, request.tracestate);
      // wrap() serves one route, so the path is the route (a regex route would name its pattern instead).
      span_ = observer_->tracer_->StartSpan(method + " " + path,
                                            {{"http.request.method", method},
                                             {"url.path", path},
                                             {"url.scheme", "http"},
                                             {"http.route", path}},
                                            start);
      scope_ = std::make_unique<trace_api::Scope>(span_);  // database spans become its children
    }

    // Only for a span that is recorded (with no SDK, or not sampled, nobody would see it).
    bool wants_first_execution_age() const override {
      return observer_->options_.first_execution_age && span_ && span_->IsRecording();
    }

    std::optional<std::string> trace_context() const override {
      if (!span_ || !observer_->options_.store_trace_context) return std::nullopt;
      std::string traceparent = detail::traceparent_of(span_);
      if (traceparent.empty()) return std::nullopt;  // a no-op tracer: nothing to link to
      return traceparent;
    }

    void ended(const RequestEnd& end) noexcept override {
      namespace trace_api = detail::trace_api;
      const char* outcome = end.outcome ? to_string(*end.outcome) : nullptr;
      const std::string error_type(end.error_type);
      if (span_) end_span(end, outcome, error_type);
      if (observer_->metering_) {
        std::map<std::string, std::string> labels;
        if (outcome) labels["pg_idempotency.outcome"] = outcome;
        if (!error_type.empty()) labels["error.type"] = error_type;
        observer_->requests_->Add(1, labels);
        observer_->duration_->Record(detail::seconds(end.duration), labels, opentelemetry::context::Context{});
      }
    }

   private:
    void end_span(const RequestEnd& end, const char* outcome, const std::string& error_type) noexcept {
      namespace trace_api = detail::trace_api;
      span_->SetAttribute("http.response.status_code", static_cast<int64_t>(end.status));
      if (outcome) span_->SetAttribute("pg_idempotency.outcome", outcome);
      if (!end.scope.empty()) {
        span_->SetAttribute("pg_idempotency.scope", detail::nostd::string_view(end.scope.data(), end.scope.size()));
      }
      if (end.attempt > 0) span_->SetAttribute("pg_idempotency.attempt", static_cast<int64_t>(end.attempt));
      if (!end.key_hash.empty()) span_->SetAttribute("pg_idempotency.key_hash", end.key_hash);
      if (!end.key.empty()) span_->SetAttribute("pg_idempotency.key", detail::nostd::string_view(end.key.data(), end.key.size()));
      if (!error_type.empty()) {
        span_->SetAttribute("error.type", error_type);
        span_->SetStatus(trace_api::StatusCode::kError, error_type);  // server spans: 5xx only
      }
      if (end.first_execution_age) {
        span_->SetAttribute("pg_idempotency.first_execution.age",
                            std::chrono::duration<double>(*end.first_execution_age).count());
      }
      if (end.stored_trace_context) link_to_first_execution(end, outcome);
      scope_.reset();
      span_->End();
    }

    // The span that did the work, as a link on a child span (links are given when
    // a span starts, and the stored context is known only once the claim answered).
    void link_to_first_execution(const RequestEnd& end, const char* outcome) noexcept {
      namespace trace_api = detail::trace_api;
      auto first = detail::context_of(*end.stored_trace_context, "");
      const trace_api::SpanContext linked = trace_api::GetSpan(first)->GetContext();
      if (!linked.IsValid()) return;
      trace_api::StartSpanOptions start;
      start.kind = trace_api::SpanKind::kInternal;
      start.start_system_time = opentelemetry::common::SystemTimestamp(start_system_);
      start.start_steady_time = opentelemetry::common::SteadyTimestamp(start_steady_);
      start.parent = span_->GetContext();
      std::vector<detail::Attribute> attributes = {{"pg_idempotency.outcome", outcome ? outcome : ""}};
      if (!end.key_hash.empty()) attributes.emplace_back("pg_idempotency.key_hash", end.key_hash);
      if (end.first_execution_age) {
        attributes.emplace_back("pg_idempotency.first_execution.age",
                                std::chrono::duration<double>(*end.first_execution_age).count());
      }
      auto child = observer_->tracer_->StartSpan(std::string("pg_idempotency ") + (outcome ? outcome : "link"),
                                                 attributes, {{linked, {}}}, start);
      child->End();
    }

    Observer* observer_;
    std::chrono::system_clock::time_point start_system_;
    std::chrono::steady_clock::time_point start_steady_;
    detail::nostd::shared_ptr<detail::trace_api::Span> span_;
    std::unique_ptr<detail::trace_api::Scope> scope_;
  };

  Options options_;
  bool tracing_ = false, metering_ = false;
  detail::nostd::shared_ptr<detail::trace_api::Tracer> tracer_;
  detail::nostd::unique_ptr<detail::metrics_api::Counter<uint64_t>> requests_;
  detail::nostd::unique_ptr<detail::metrics_api::Histogram<double>> duration_;
};

}  // namespace idempotency::otel
