// tests: skipping a test that needs something this machine lacks.
#pragma once

#include <string>

namespace tandem::test {

// Records that the running test case was skipped; the tally listener counts it
// as skipped, never as passed. Use through TANDEM_SKIP, which also returns.
void mark_skipped(const std::string& reason);

}  // namespace tandem::test

#define TANDEM_SKIP(reason)                          \
    do {                                             \
        ::tandem::test::mark_skipped(reason);        \
        return;                                      \
    } while (0)
