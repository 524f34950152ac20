// replication: front ends — the engine's volume as a block device on the primary (FUSE + loop, or NBD).
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/replication/engine.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace tandem::replication {

// How the volume becomes a block device (docs/live-store.md, "Front ends").
enum class frontend_kind : std::uint8_t {
    automatic,  // FUSE + loop where /dev/fuse is usable, else NBD where the kernel has nbd.ko
    fuse,       // a one-file FUSE file system; a loop device attaches to the file
    nbd,        // nbd.ko configured through generic netlink, served over a socket pair
};
[[nodiscard]] std::string_view to_string(frontend_kind k) noexcept;

struct frontend_config {
    frontend_kind kind = frontend_kind::automatic;
    std::string work_dir;  // the FUSE mount point lives here (created on demand)
    unsigned threads = 8;  // FUSE worker threads: requests served in parallel
};

// A block device whose reads, writes and flushes go to the engine. Exists only
// on the primary: expose() refuses a secondary engine. The destructor detaches
// whatever is still attached; close() does it and reports errors.
class frontend {
public:
    virtual ~frontend() = default;
    [[nodiscard]] virtual std::string_view kind() const noexcept = 0;  // "fuse+loop" or "nbd"
    [[nodiscard]] virtual const std::string& device() const noexcept = 0;  // /dev/loop7, /dev/nbd0
    // Detaches the block device (it must no longer be mounted) and stops serving.
    [[nodiscard]] virtual result<void> close() = 0;
    // The same while a file system on the device is still in use (lazily
    // unmounted): whatever I/O it still makes fails from now on, none reaches
    // the engine once this returns.
    [[nodiscard]] virtual result<void> cut() = 0;
};

// Whether nbd.ko is loaded, or can be (modprobe).
[[nodiscard]] bool have_nbd();
// Which front end `kind` means on this kernel, and why (for the log).
[[nodiscard]] frontend_kind resolve(frontend_kind kind, std::string& why);

// Exposes the primary engine's volume. `why_not` says what failed.
[[nodiscard]] result<std::unique_ptr<frontend>> expose(engine& e, const frontend_config& cfg, std::string& why_not);

// What a crashed tandemd may have left behind in `work_dir`: a FUSE mount
// whose server is gone. Detached lazily so that a restart starts clean.
void clean_stale_frontend(const std::string& work_dir);

// Whether the block device `major:minor` (a mount's source) is a front end that
// an earlier tandemd left behind, serving nothing now: a loop device over the
// FUSE volume of `work_dir`, or an NBD device whose server is gone. Returns
// what it is ("/dev/loop3 over the FUSE volume of a stopped tandemd"), or ""
// when the device is anything else, which Tandem must not touch.
[[nodiscard]] std::string stale_frontend_device(unsigned major_no, unsigned minor_no, const std::string& work_dir);

// The FUSE front end and the NBD one, each on its own (tests and benchmarks).
[[nodiscard]] result<std::unique_ptr<frontend>> expose_fuse(engine& e, const frontend_config& cfg, std::string& why_not);
[[nodiscard]] result<std::unique_ptr<frontend>> expose_nbd(engine& e, const frontend_config& cfg, std::string& why_not);

}  // namespace tandem::replication
