// base: loading a kernel module the way systemd-modules-load does — quietly, no shell.
#pragma once

#include <string>
#include <vector>

namespace tandem {

// `modprobe -q MODULE ARGS...`; true when it exited 0. The caller checks that
// the module's interface appeared (/sys/module/X, /proc/drbd, ...).
bool load_kernel_module(const std::string& module, const std::vector<std::string>& args = {});

// `modprobe -q -n MODULE`: whether it is loaded, built in, or could be loaded,
// without loading it (for a configuration check that must change nothing).
bool kernel_module_available(const std::string& module);

}  // namespace tandem
