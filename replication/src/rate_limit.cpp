// replication: token bucket arithmetic.
#include "tandem/replication/rate_limit.hpp"

#include <algorithm>

namespace tandem::replication {

token_bucket::token_bucket(std::uint64_t bytes_per_second, std::uint64_t burst_bytes, steady_time now,
                           bool start_full)
    : rate_(bytes_per_second),
      burst_(static_cast<std::int64_t>(burst_bytes)),
      tokens_(start_full ? static_cast<double>(burst_bytes) : 0.0),
      last_(now) {}

void token_bucket::refill(steady_time now) {
    if (now <= last_) return;
    double earned = static_cast<double>(rate_) * std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(tokens_ + earned, static_cast<double>(burst_));
    last_ = now;
}

nanos token_bucket::take(std::uint64_t n, steady_time now) {
    refill(now);
    tokens_ -= static_cast<double>(n);
    if (tokens_ >= 0 || rate_ == 0) return nanos(0);
    return nanos(static_cast<std::int64_t>(-tokens_ / static_cast<double>(rate_) * 1e9 + 0.5));
}

void token_bucket::set_rate(std::uint64_t bytes_per_second, steady_time now) {
    refill(now);
    rate_ = bytes_per_second;
}

void token_bucket::set_rate(std::uint64_t bytes_per_second, steady_time now, std::uint64_t burst_bytes) {
    set_rate(bytes_per_second, now);
    burst_ = static_cast<std::int64_t>(burst_bytes);
    tokens_ = std::min(tokens_, static_cast<double>(burst_));
}

}  // namespace tandem::replication
