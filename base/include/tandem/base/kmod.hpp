// base: loading a kernel module the way systemd-modules-load does — quietly, no shell.
#pragma once

#include <string>
#include <vector>

namespace tandem {

// `modprobe -q MODULE ARGS...`; true when it exited 0. The caller checks that
// the module's interface appeared (/sys/module/X, /proc/drbd, ...).
bool load_kernel_module(const std::string& module, const std::vector<std::string>& args = {});

}  // namespace tandem
