// The demo service's telemetry: structured log lines (one JSON object a line,
// with trace_id) and, where the OpenTelemetry adapter is built
// (IDEMPOTENCY_OPENTELEMETRY), spans and metrics through the SDK's standard
// environment: OTEL_TRACES_EXPORTER=console prints every span,
// OTEL_METRICS_EXPORTER=console the metrics (every OTEL_METRIC_EXPORT_INTERVAL
// ms, 60000 by default, and at exit). Other exporter names are not built in:
// the service then runs with the API alone (no SDK), which costs next to nothing.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>

#include "idempotency/client.hpp"
#include "idempotency/observer.hpp"

#if IDEMPOTENCY_OPENTELEMETRY
#include "idempotency/opentelemetry.hpp"
#include "opentelemetry/exporters/ostream/metric_exporter_factory.h"
#include "opentelemetry/exporters/ostream/span_exporter_factory.h"
#include "opentelemetry/sdk/metrics/export/periodic_exporting_metric_reader_factory.h"
#include "opentelemetry/sdk/metrics/meter_provider.h"
#include "opentelemetry/sdk/metrics/meter_provider_factory.h"
#include "opentelemetry/sdk/trace/simple_processor_factory.h"
#include "opentelemetry/sdk/trace/tracer_provider.h"
#include "opentelemetry/sdk/trace/tracer_provider_factory.h"
#endif

namespace demo {

// What the observer learnt about the request this thread is serving, for its
// log line (httplib calls the logger on the same thread, after the handler).
struct RequestFacts {
  std::string trace_id, span_id, outcome, key_hash, scope;
  double duration_ms = -1;
};
inline thread_local std::optional<RequestFacts> t_request;

// 32 lower-case hex digits, or "" when traceparent is not a valid W3C header.
inline std::string trace_id_of(const std::string& traceparent) {
  if (traceparent.size() < 55 || traceparent[2] != '-' || traceparent[35] != '-') return "";
  std::string id = traceparent.substr(3, 32);
  if (id.find_first_not_of("0123456789abcdef") != std::string::npos || id == std::string(32, '0')) return "";
  return id;
}

inline std::string random_trace_id() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(random()),
                static_cast<unsigned long long>(random()));
  return buf;
}

// Passes everything on to the OpenTelemetry observer (if any) and keeps the
// request's outcome and trace for its log line.
class LoggedObserver : public idempotency::Observer {
 public:
  explicit LoggedObserver(std::shared_ptr<idempotency::Observer> inner) : inner_(std::move(inner)) {}

  void sql_call(const idempotency::SqlCall& call) noexcept override {
    if (inner_) inner_->sql_call(call);
  }
  std::unique_ptr<idempotency::RequestObservation> request_started(const idempotency::RequestStart& start) override {
    return std::make_unique<Request>(inner_ ? inner_->request_started(start) : nullptr, start);
  }

 private:
  class Request : public idempotency::RequestObservation {
   public:
    Request(std::unique_ptr<idempotency::RequestObservation> inner, const idempotency::RequestStart& start)
        : inner_(std::move(inner)), incoming_(start.traceparent) {}
    std::optional<std::string> trace_context() const override {
      return inner_ ? inner_->trace_context() : std::nullopt;
    }
    bool wants_first_execution_age() const override { return inner_ && inner_->wants_first_execution_age(); }
    void ended(const idempotency::RequestEnd& end) noexcept override {
      try {
        RequestFacts facts;
        // The span's trace (the incoming one, or the one the SDK began), else the caller's.
        const std::optional<std::string> span = trace_context();
        facts.trace_id = trace_id_of(span.value_or(incoming_));
        if (span && !facts.trace_id.empty()) facts.span_id = span->substr(36, 16);  // this request's span
        if (end.outcome) facts.outcome = to_string(*end.outcome);
        facts.key_hash = end.key_hash;
        facts.scope = std::string(end.scope);
        facts.duration_ms = std::chrono::duration<double, std::milli>(end.duration).count();
        t_request = std::move(facts);
      } catch (...) {
      }
      if (inner_) inner_->ended(end);
    }

   private:
    std::unique_ptr<idempotency::RequestObservation> inner_;
    std::string incoming_;
  };
  std::shared_ptr<idempotency::Observer> inner_;
};

// One JSON object a line on stdout, for every request (httplib's logger).
inline void log_request(const httplib::Request& req, const httplib::Response& res) {
  static std::mutex mutex;
  RequestFacts facts = t_request.value_or(RequestFacts{});
  t_request.reset();
  if (facts.trace_id.empty()) facts.trace_id = trace_id_of(req.get_header_value("traceparent"));
  if (facts.trace_id.empty()) facts.trace_id = random_trace_id();
  char when[64];
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  std::string line = "{\"time\": \"" + std::string(when) + "\", \"level\": \"info\", \"msg\": \"request\"" +
                     ", \"method\": " + idempotency::json_quote(req.method) +
                     ", \"path\": " + idempotency::json_quote(req.path) + ", \"status\": " + std::to_string(res.status);
  if (!facts.outcome.empty()) line += ", \"outcome\": \"" + facts.outcome + "\"";
  if (!facts.scope.empty()) line += ", \"scope\": " + idempotency::json_quote(facts.scope);
  if (!facts.key_hash.empty()) line += ", \"key_hash\": \"" + facts.key_hash + "\"";
  if (facts.duration_ms >= 0) {
    char d[32];
    std::snprintf(d, sizeof d, "%.3f", facts.duration_ms);
    line += ", \"duration_ms\": " + std::string(d);
  }
  line += ", \"trace_id\": \"" + facts.trace_id + "\"";
  if (!facts.span_id.empty()) line += ", \"span_id\": \"" + facts.span_id + "\"";
  line += "}\n";
  std::lock_guard<std::mutex> lock(mutex);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

// The SDK behind the global providers, as the standard environment asks.
class Telemetry {
 public:
  Telemetry() {
#if IDEMPOTENCY_OPENTELEMETRY
    if (env_is("OTEL_TRACES_EXPORTER", "console")) {
      tracer_provider_ = std::shared_ptr<opentelemetry::sdk::trace::TracerProvider>(
          opentelemetry::sdk::trace::TracerProviderFactory::Create(
              opentelemetry::sdk::trace::SimpleSpanProcessorFactory::Create(
                  opentelemetry::exporter::trace::OStreamSpanExporterFactory::Create())));
      opentelemetry::trace::Provider::SetTracerProvider(
          opentelemetry::nostd::shared_ptr<opentelemetry::trace::TracerProvider>(tracer_provider_));
    }
    if (env_is("OTEL_METRICS_EXPORTER", "console")) {
      opentelemetry::sdk::metrics::PeriodicExportingMetricReaderOptions options;
      const char* interval = std::getenv("OTEL_METRIC_EXPORT_INTERVAL");
      options.export_interval_millis = std::chrono::milliseconds(interval ? std::atol(interval) : 60000);
      options.export_timeout_millis = std::min(options.export_interval_millis, std::chrono::milliseconds(30000));
      meter_provider_ = std::shared_ptr<opentelemetry::sdk::metrics::MeterProvider>(
          opentelemetry::sdk::metrics::MeterProviderFactory::Create());
      meter_provider_->AddMetricReader(opentelemetry::sdk::metrics::PeriodicExportingMetricReaderFactory::Create(
          opentelemetry::exporter::metrics::OStreamMetricExporterFactory::Create(), options));
      opentelemetry::metrics::Provider::SetMeterProvider(
          opentelemetry::nostd::shared_ptr<opentelemetry::metrics::MeterProvider>(meter_provider_));
    }
#endif
  }
  ~Telemetry() {
#if IDEMPOTENCY_OPENTELEMETRY
    if (meter_provider_) meter_provider_->Shutdown();  // the last export
    if (tracer_provider_) tracer_provider_->Shutdown();
#endif
  }
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;

  // enabled false: no observer at all (what bench/observability compares against).
  std::shared_ptr<idempotency::Observer> observer(bool enabled) const {
    if (!enabled) return nullptr;
    std::shared_ptr<idempotency::Observer> inner;
#if IDEMPOTENCY_OPENTELEMETRY
    inner = std::make_shared<idempotency::otel::Observer>();
#endif
    return std::make_shared<LoggedObserver>(inner);
  }

  static bool built_with_opentelemetry() {
#if IDEMPOTENCY_OPENTELEMETRY
    return true;
#else
    return false;
#endif
  }

 private:
  static bool env_is(const char* name, const char* value) {
    const char* e = std::getenv(name);
    return e != nullptr && std::string(e) == value;
  }
#if IDEMPOTENCY_OPENTELEMETRY
  std::shared_ptr<opentelemetry::sdk::trace::TracerProvider> tracer_provider_;
  std::shared_ptr<opentelemetry::sdk::metrics::MeterProvider> meter_provider_;
#endif
};

}  // namespace demo
