// tests: Catch2 main and the tally listener that prints "N passed, N failed, N skipped".
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "support/skip.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

namespace tandem::test {

namespace {
std::string g_skip_reason;
bool g_skipped = false;
}  // namespace

void mark_skipped(const std::string& reason) {
    g_skipped = true;
    g_skip_reason = reason;
}

// Counts test cases, not assertions. A skipped case is one that called
// TANDEM_SKIP and failed nothing; its reason is printed so a reader sees why.
class tally_listener : public Catch::TestEventListenerBase {
public:
    using TestEventListenerBase::TestEventListenerBase;

    void testCaseStarting(const Catch::TestCaseInfo&) override {
        g_skipped = false;
        g_skip_reason.clear();
    }
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        const auto& name = stats.testInfo.name;
        if (!stats.totals.assertions.allOk()) {
            ++failed_;
            std::cerr << "FAILED: " << name << "\n";
        } else if (g_skipped) {
            ++skipped_;
            std::cerr << "SKIPPED: " << name << " (" << g_skip_reason << ")\n";
        } else {
            ++passed_;
        }
    }
    void testRunEnded(const Catch::TestRunStats&) override {
        // tests/run prints the final line from this file, after Catch2's own summary.
        if (const char* path = std::getenv("TANDEM_TALLY")) {
            std::ofstream(path) << passed_ << ' ' << failed_ << ' ' << skipped_ << '\n';
        }
    }

private:
    int passed_ = 0, failed_ = 0, skipped_ = 0;
};

CATCH_REGISTER_LISTENER(tally_listener)

}  // namespace tandem::test
