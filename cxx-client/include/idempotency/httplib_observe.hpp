// <idempotency/httplib_observe.hpp> — the middleware's side of
// <idempotency/observer.hpp>: collects what happened to one request and tells
// the observer when it has been answered. Included by <idempotency/httplib.hpp>;
// not meant to be used on its own.
#pragma once

#include <httplib.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "idempotency/client.hpp"
#include "idempotency/observer.hpp"

namespace idempotency::http::detail {

// One request, observed from arrival to answer; inert without an observer (or
// when the observer does not observe this request).
class ObservedRequest {
 public:
  ObservedRequest(Observer* observer, const httplib::Request& req, const httplib::Response& res)
      : observer_(observer), res_(res) {
    if (observer_ == nullptr) return;
    start_ = std::chrono::steady_clock::now();
    traceparent_ = req.get_header_value("traceparent");
    tracestate_ = req.get_header_value("tracestate");
    observation_ = observer_->request_started(RequestStart{req.method, req.path, traceparent_, tracestate_});
  }
  ObservedRequest(const ObservedRequest&) = delete;
  ObservedRequest& operator=(const ObservedRequest&) = delete;
  ~ObservedRequest() {
    if (observation_ == nullptr) return;
    try {
      end_.status = res_.status;
      if (!end_.outcome && end_.error_type.empty() && res_.status >= 500) {
        status_text_ = std::to_string(res_.status);
        end_.error_type = status_text_;
      }
      end_.duration = std::chrono::steady_clock::now() - start_;
    } catch (...) {
    }
    observation_->ended(end_);
  }

  bool active() const noexcept { return observation_ != nullptr; }

  void key(const std::string& key, const std::string& scope) {
    if (!active()) return;
    key_ = key;
    scope_ = scope;
    end_.scope = scope_;
    end_.key_hash = key_hash(key_);
    if (observer_->wants_raw_key()) end_.key = key_;
  }

  // Just before the claim: the trace context to store with the key.
  // (Extension 1.2: a claim with a trace context needs claim's seventh argument.)
  void before_claim(ClaimOptions& claim) const {
    if (active()) claim.trace_context = observation_->trace_context();
  }

  // The claim answered (the handler ran if it was Claimed).
  void answered(const ClaimResult& r, Client& client) {
    if (!active()) return;
    switch (r.outcome) {
      case Outcome::Claimed:
        end_.outcome = RequestOutcome::Claimed;
        break;
      case Outcome::Replay:
        end_.outcome = RequestOutcome::Replay;
        break;
      case Outcome::InProgress:
        end_.outcome = RequestOutcome::InProgress;
        break;
      case Outcome::Mismatch:
        end_.outcome = RequestOutcome::Mismatch;
        break;
    }
    end_.attempt = r.attempt;
    if (r.outcome == Outcome::Replay || r.outcome == Outcome::InProgress) end_.stored_trace_context = r.trace_context;
    if (r.outcome == Outcome::Replay && observation_->wants_first_execution_age()) {
      try {  // a failure here must not fail the replay: the age is just not known
        if (auto k = client.lookup(scope_, key_); k && k->completed_at) {
          end_.first_execution_age = Clock::now() - *k->completed_at;
        }
      } catch (const Error&) {
      }
    }
  }

  void rejected() {
    if (!active()) return;
    end_.outcome = RequestOutcome::Rejected;
    end_.error_type = {};  // a refused request is the client's error, not the server's
  }

  // A database error answered 5xx: its SQLSTATE is the error type.
  void failed(const std::string& sqlstate) {
    if (!active()) return;
    status_text_ = sqlstate;
    end_.error_type = status_text_;
  }

 private:
  Observer* observer_;
  const httplib::Response& res_;
  std::unique_ptr<RequestObservation> observation_;
  std::chrono::steady_clock::time_point start_;
  std::string traceparent_, tracestate_, key_, scope_, status_text_;
  RequestEnd end_;
};

}  // namespace idempotency::http::detail
