#include "sweeper/sweep_pacing.hpp"

#include <algorithm>

namespace pgi::sweeper::pacing {

Micros PauseOwed(Micros worked, Micros slept, double throttle) {
  if (throttle <= 0) return 0;
  const double owed = static_cast<double>(worked) * throttle - static_cast<double>(slept);
  return owed <= 0 ? 0 : static_cast<Micros>(std::min(owed, 1e6));
}

double TargetRate(std::optional<double> claims_per_second) {
  if (!claims_per_second) return kFloorRowsPerSecond;
  if (*claims_per_second <= 0) return 0;
  return std::max(kFloorRowsPerSecond, kRowsPerClaim * *claims_per_second);
}

std::optional<double> ClaimRate::Update(Micros now, std::uint64_t claims) {
  if (since_ < 0 || claims < from_) {  // first reading, or the counters were reset (restart)
    since_ = now;
    from_ = claims;
  } else if (now - since_ >= kRateWindowUs) {
    rate_ = static_cast<double>(claims - from_) * 1e6 / static_cast<double>(now - since_);
    since_ = now;
    from_ = claims;
  }
  return rate_;
}

Micros RatePacer::PauseAfter(Micros now, std::int64_t rows, double rows_per_second) {
  if (rows_per_second <= 0 || rows <= 0) return 0;
  if (due_ < now - kRateSlackUs) due_ = now - kRateSlackUs;
  due_ += static_cast<Micros>(static_cast<double>(rows) * 1e6 / rows_per_second);
  return due_ > now ? std::min<Micros>(due_ - now, 1'000'000) : 0;
}

std::int64_t NextLimit(std::int64_t last_limit, std::int64_t last_rows, Micros last_elapsed, std::int64_t batch_size,
                       double throttle) {
  if (throttle <= 0) return batch_size;
  if (last_limit <= 0) return std::min(batch_size, kFirstLimit);
  std::int64_t next = last_limit;
  if (last_rows > 0 && last_elapsed > 0) {
    const double rows_per_us = static_cast<double>(last_rows) / static_cast<double>(last_elapsed);
    const double fit = rows_per_us * static_cast<double>(kSliceUs);
    // Move halfway towards the rows that fit in a slice: one slow batch (a
    // checkpoint, a busy moment) does not collapse the next one.
    next = static_cast<std::int64_t>((static_cast<double>(last_limit) + fit) / 2);
  }
  return std::clamp(next, std::min(kMinLimit, batch_size), batch_size);
}

}  // namespace pgi::sweeper::pacing
