// replication: choosing the front end this kernel offers.
#include "tandem/replication/frontend.hpp"

#include "tandem/base/kmod.hpp"

#include "tandem/base/log.hpp"

#include <linux/major.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace tandem::replication {

namespace {

bool exists(const char* path) {
    struct stat st {};
    return ::stat(path, &st) == 0;
}

std::string first_line(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

}  // namespace

std::string stale_frontend_device(unsigned major_no, unsigned minor_no, const std::string& work_dir) {
    auto sys = fmt::format("/sys/dev/block/{}:{}", major_no, minor_no);
    if (major_no == LOOP_MAJOR) {
        // The FUSE front end's file is <work_dir>/fuse/volume. Once a stopping
        // tandemd has detached its FUSE mount, the kernel can no longer name the
        // file from the root and shows it from the mount's own root: "/volume".
        // While that tandemd serves it, the file answers; once it is gone, the
        // FUSE mount answers ENOTCONN, or is no longer there at all.
        auto file = first_line(sys + "/loop/backing_file");
        std::error_code ec;  // the kernel names the file by its canonical path
        auto ours = (std::filesystem::weakly_canonical(work_dir, ec) / "fuse" / "volume").string();
        if ((file != ours && file != "/volume") || exists(file.c_str())) return "";
        return fmt::format("/dev/loop{} over the {}FUSE volume of a tandemd that is gone", minor_no,
                           file == ours ? "" : "detached ");
    }
    if (major_no == NBD_MAJOR) {
        // nbd.ko shows the pid of the process that connected the device while it
        // is connected. A tandemd that starts serves no device yet: any other
        // NBD device whose server is alive belongs to someone else.
        auto pid = first_line(sys + "/pid");
        if (!pid.empty() && (::kill(static_cast<pid_t>(std::strtol(pid.c_str(), nullptr, 10)), 0) == 0 || errno != ESRCH))
            return "";
        return fmt::format("/dev/nbd{} with no server{}", minor_no, pid.empty() ? "" : " (pid " + pid + " is gone)");
    }
    return "";
}

// nbd.ko loaded, or loadable: modprobe quietly, as systemd-modules-load would.
bool have_nbd() {
    if (exists("/sys/module/nbd")) return true;
    return load_kernel_module("nbd", {"nbds_max=4"}) && exists("/sys/module/nbd");
}

frontend_kind resolve(frontend_kind kind, std::string& why) {
    switch (kind) {
        case frontend_kind::fuse:
            why = "configured: [store] frontend = \"fuse\"";
            return kind;
        case frontend_kind::nbd:
            why = "configured: [store] frontend = \"nbd\"";
            return kind;
        case frontend_kind::automatic:
            break;
    }
    // FUSE first: it is the path tested on every kernel; NBD where FUSE is absent.
    if (::access("/dev/fuse", R_OK | W_OK) == 0) {
        why = "auto: /dev/fuse is usable, so FUSE with a loop device";
        return frontend_kind::fuse;
    }
    if (have_nbd()) {
        why = "auto: no usable /dev/fuse, and the kernel has nbd.ko";
        return frontend_kind::nbd;
    }
    why = "auto: neither /dev/fuse nor nbd.ko; trying FUSE, which will say what is missing";
    return frontend_kind::fuse;
}

result<std::unique_ptr<frontend>> expose(engine& e, const frontend_config& cfg, std::string& why_not) {
    std::string why;
    auto k = resolve(cfg.kind, why);
    log::notice("store.frontend", "front end {} ({})", to_string(k), why);
    if (k == frontend_kind::nbd) return expose_nbd(e, cfg, why_not);
    return expose_fuse(e, cfg, why_not);
}

}  // namespace tandem::replication
