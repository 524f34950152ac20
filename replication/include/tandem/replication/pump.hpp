// replication: the data pump — a volume streamed over TCP through one io_uring, and written back on the peer.
#pragma once

#include "tandem/base/clock.hpp"
#include "tandem/base/result.hpp"
#include "tandem/replication/metadata.hpp"
#include "tandem/replication/protocol.hpp"
#include "tandem/replication/rate_limit.hpp"
#include "tandem/replication/volume.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace tandem::replication {

// Figures the control plane reads while a pump runs (from another thread).
struct pump_progress {
    std::atomic<std::uint64_t> bytes_done{0};   // sent and acknowledged (source) / written (target)
    std::atomic<std::uint64_t> bytes_total{0};
    std::atomic<std::uint64_t> rate_bps{0};     // the limit now; tandemctl sync-rate changes it
    std::atomic<bool> stop{false};              // asks the pump to end after the frames in flight
    // A resync source yields to application writes (rate_limit.hpp, resync_rate):
    std::atomic<std::uint64_t> yield_bps{0};    // its rate while they arrive; 0: never yields
    std::atomic<steady_time::rep> last_write{steady_time::min().time_since_epoch().count()};

    // Called for each application write the resync runs beside (any thread).
    void application_wrote(steady_time now) noexcept { last_write = now.time_since_epoch().count(); }
    [[nodiscard]] std::uint64_t rate_now(steady_time now) const noexcept {
        return resync_rate(rate_bps, yield_bps, steady_time(steady_time::duration(last_write.load())), now);
    }
};

struct pump_options {
    std::uint32_t chunk = 1 << 20;   // bytes per data frame
    unsigned depth = 16;             // frames in flight
    std::uint64_t start = 0;         // resume offset (a multiple of chunk)
    std::uint64_t end = 0;           // 0: the whole volume
    std::chrono::milliseconds stall{10'000};  // drop a peer silent this long mid-frame or unacknowledging
    // Source: send only the dirty runs of this bitmap that lie in [start, end),
    // cut into frames of at most `chunk` (a resync); null: every byte (a full stream).
    const dirty_bitmap* plan = nullptr;
    // Source: send frames with IORING_OP_SEND_ZC from the registered buffers
    // where the kernel has it (make bench-replication measures whether it pays).
    bool zero_copy = false;
    // Target: run until the source's resync_done frame instead of until `end` is written.
    bool until_done = false;
    // Target: called (on the pump's thread) once each frame's write completed;
    // the caller fdatasyncs before it records anything as durable.
    std::function<void(std::uint64_t offset, std::uint32_t length)> on_durable;
};

struct pump_result {
    std::uint64_t bytes = 0;         // acknowledged (source) or written (target)
    std::uint64_t resume_at = 0;     // every byte below this is durable on the target
    double seconds = 0;
    std::string error;               // empty on success
    std::optional<resync_done_msg> done;  // target with until_done: what the source's resync_done said
    [[nodiscard]] bool ok() const { return error.empty(); }
};

// Reads [start, end) of `vol` with O_DIRECT into registered buffers and sends
// it as checksummed data frames on the connected socket `sock`, at most
// progress.rate_bps (0 = unlimited); returns when the target acknowledged all,
// or on the first error (a dropped link: resume from resume_at).
pump_result pump_source(volume& vol, int sock, const pump_options& opt, pump_progress& progress,
                        const clock_source& clock);

// Receives data frames on `sock`, checks each frame's bounds and checksum
// before any byte reaches the disk, writes with O_DIRECT and acknowledges each
// frame once its write completed. Returns when the source sent everything
// (`end` reached) or on the first bad frame or I/O error (the connection is the
// caller's to drop).
pump_result pump_target(volume& vol, int sock, const pump_options& opt, pump_progress& progress);

}  // namespace tandem::replication
