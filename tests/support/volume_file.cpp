// tests: loop devices over /dev/shm files for the replication scenarios.
#include "support/volume_file.hpp"

#include "support/netns.hpp"

namespace tandem::test {

loop_volume::loop_volume(std::uint64_t size, bool random_content) {
    static int counter = 0;
    file = "/dev/shm/tandem-loop-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    if (random_content)
        run_ok("head -c " + std::to_string(size) + " /dev/urandom > " + file);
    else
        run_ok("truncate -s " + std::to_string(size) + " " + file);
    auto out = run_ok("losetup --find --show " + file);
    dev = out.substr(0, out.find('\n'));
}

loop_volume::~loop_volume() {
    run("losetup -d " + dev);
    ::unlink(file.c_str());
}

std::string loop_volume::sha256() const {
    auto out = run_ok("sha256sum " + dev);
    return out.substr(0, 64);
}

}  // namespace tandem::test
