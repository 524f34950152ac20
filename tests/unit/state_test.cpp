// tests: the whole host-state transition table.
#include "tandem/agent/state.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <utility>

using namespace tandem::agent;
using S = host_state;

TEST_CASE("every transition is either allowed or refused with a named reason", "[unit][state]") {
    const std::set<std::pair<S, S>> allowed = {
        {S::initializing, S::standby},        {S::initializing, S::active},       {S::initializing, S::failed},
        {S::initializing, S::needs_upgrade},  {S::initializing, S::synchronizing}, {S::initializing, S::setting_offline},
        {S::initializing, S::restoring},
        {S::standby, S::active},              {S::standby, S::failed},            {S::standby, S::synchronizing},
        {S::standby, S::setting_offline},     {S::standby, S::setting_online},    {S::standby, S::needs_upgrade},
        {S::standby, S::restoring},
        {S::synchronizing, S::standby},       {S::synchronizing, S::failed},      {S::synchronizing, S::setting_offline},
        {S::synchronizing, S::needs_upgrade}, {S::synchronizing, S::restoring},
        {S::active, S::standby},              {S::active, S::failed},             {S::active, S::setting_offline},
        {S::failed, S::standby},              {S::failed, S::needs_upgrade},      {S::failed, S::restoring},
        {S::setting_offline, S::standby},     {S::setting_offline, S::failed},    {S::setting_offline, S::needs_upgrade},
        {S::setting_offline, S::restoring},
        {S::setting_online, S::standby},      {S::setting_online, S::active},     {S::setting_online, S::failed},
        {S::setting_online, S::needs_upgrade}, {S::setting_online, S::restoring},
        {S::needs_upgrade, S::standby},       {S::needs_upgrade, S::failed},      {S::needs_upgrade, S::setting_offline},
        {S::needs_upgrade, S::restoring},
        {S::restoring, S::standby},           {S::restoring, S::synchronizing},   {S::restoring, S::failed},
        {S::restoring, S::needs_upgrade},
    };
    int checked = 0;
    for (int f = 1; f <= 10; ++f) {
        for (int t = 1; t <= 10; ++t) {
            auto from = static_cast<S>(f), to = static_cast<S>(t);
            auto v = check_transition(from, to);
            INFO(to_string(from) << " -> " << to_string(to) << ": " << v.reason);
            CHECK(v.allowed == (allowed.count({from, to}) == 1));
            CHECK_FALSE(v.reason.empty());
            ++checked;
        }
    }
    CHECK(checked == 100);
}

TEST_CASE("the hazards are refused with the reason an operator needs", "[unit][state]") {
    CHECK(check_transition(S::synchronizing, S::active).reason ==
          "data is still synchronizing; promoting it would lose writes");
    CHECK(check_transition(S::failed, S::active).reason == "a failed node must be repaired before it can be active");
    CHECK(check_transition(S::needs_upgrade, S::active).reason ==
          "the peer runs other software; no failover until both versions match");
    CHECK(check_transition(S::active, S::synchronizing).reason ==
          "the active node is the synchronization source, never the target");
}

TEST_CASE("names are the seeds' status names", "[unit][state]") {
    CHECK(to_string(S::active) == "ACTIVE");
    CHECK(to_string(S::standby) == "STANDBY");
    CHECK(to_string(S::needs_upgrade) == "NEEDS_UPGRADE");
    CHECK(to_string(host_mode::offline) == "OFFLINE");
    CHECK_FALSE(promotable(sync_state::synchronizing));
    CHECK(promotable(sync_state::up_to_date));
}
