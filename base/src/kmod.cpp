// base: quiet modprobe through posix_spawnp.
#include "tandem/base/kmod.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace tandem {

namespace {

bool modprobe(std::vector<const char*> argv) {
    argv.insert(argv.begin(), {"modprobe", "-q"});
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawnp(&pid, "modprobe", nullptr, nullptr, const_cast<char* const*>(argv.data()), environ) != 0)
        return false;  // no modprobe at all
    int st = 0;
    return ::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

}  // namespace

bool load_kernel_module(const std::string& module, const std::vector<std::string>& args) {
    std::vector<const char*> argv = {module.c_str()};
    for (auto& a : args) argv.push_back(a.c_str());
    return modprobe(std::move(argv));
}

bool kernel_module_available(const std::string& module) { return modprobe({"-n", module.c_str()}); }

}  // namespace tandem
