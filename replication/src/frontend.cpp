// replication: choosing the front end this kernel offers.
#include "tandem/replication/frontend.hpp"

#include "tandem/base/kmod.hpp"

#include "tandem/base/log.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace tandem::replication {

namespace {

bool exists(const char* path) {
    struct stat st {};
    return ::stat(path, &st) == 0;
}

}  // namespace

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
