// tests: the heartbeat datagram — round trip, tampering, truncation, oversize, replay.
#include "tandem/agent/heartbeat_codec.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/base/hmac.hpp"
#include "tandem/ebpf/hb_stats.h"

#include <catch2/catch.hpp>

#include <vector>

using namespace tandem;
using namespace tandem::agent;

namespace {
const std::vector<std::byte> key(48, std::byte{0x5a});

heartbeat sample() {
    heartbeat hb;
    hb.boot_id = 1'700'000'000'000'000'000ull;
    hb.seq = 42;
    hb.send_mono_ns = 123456789;
    hb.echo_seq = 41;
    hb.echo_mono_ns = 120000000;
    hb.echo_hold_ns = 5000;
    hb.generation = 7;
    hb.role = 1;
    hb.state = host_state::active;
    hb.mode = host_mode::online;
    hb.sync = sync_state::up_to_date;
    hb.flags = hb_handover;
    hb.sync_permille = 1000;
    hb.link = 1;
    hb.link_seq = 21;
    hb.ks_seq = 39;
    hb.ks_rx_ns = 110000000;
    hb.ks_tx_ns = 110050000;
    hb.ks_reply_seq = 40;
    hb.rx_lost = 3;
    hb.cluster = "store-ha";
    hb.node = "alpha";
    hb.version = "0.1.0";
    return hb;
}

std::array<std::byte, heartbeat_size> encoded(const heartbeat& hb = sample()) {
    std::array<std::byte, heartbeat_size> buf{};
    encode_heartbeat(hb, key, buf);
    return buf;
}
}  // namespace

TEST_CASE("a heartbeat survives encode and decode", "[unit][heartbeat]") {
    auto buf = encoded();
    CHECK(load_be<std::uint32_t>(buf) == 0x544E4448);  // "TNDH" on the wire
    auto r = decode_heartbeat(buf, key);
    REQUIRE(r.ok);
    const auto& hb = r.hb;
    auto s = sample();
    CHECK(hb.boot_id == s.boot_id);
    CHECK(hb.seq == 42);
    CHECK(hb.send_mono_ns == s.send_mono_ns);
    CHECK(hb.echo_seq == 41);
    CHECK(hb.echo_mono_ns == s.echo_mono_ns);
    CHECK(hb.echo_hold_ns == 5000);
    CHECK(hb.generation == 7);
    CHECK(hb.role == 1);
    CHECK(hb.state == host_state::active);
    CHECK(hb.sync == sync_state::up_to_date);
    CHECK(hb.flags == hb_handover);
    CHECK(hb.sync_permille == 1000);
    CHECK(hb.link == 1);
    CHECK(hb.link_seq == 21);
    CHECK(hb.ks_seq == 39);
    CHECK(hb.ks_rx_ns == s.ks_rx_ns);
    CHECK(hb.ks_tx_ns == s.ks_tx_ns);
    CHECK(hb.ks_reply_seq == 40);
    CHECK(hb.rx_lost == 3);
    CHECK(hb.cluster == "store-ha");
    CHECK(hb.node == "alpha");
    CHECK(hb.version == "0.1.0");
}

TEST_CASE("the kernel probe reads each field where the encoder writes it", "[unit][heartbeat]") {
    auto buf = encoded();
    auto s = sample();
    std::span<const std::byte> b(buf);
    CHECK(load_be<std::uint32_t>(b) == HBP_MAGIC);
    CHECK(std::to_integer<int>(b[4]) >= HBP_VERSION_MIN);
    CHECK(std::to_integer<int>(b[4]) <= HBP_VERSION_MAX);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_BOOT_ID)) == s.boot_id);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_SEQ)) == s.seq);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_ECHO_SEQ)) == s.echo_seq);
    CHECK(load_be<std::uint32_t>(b.subspan(HBP_OFF_LINK_SEQ)) == s.link_seq);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_KS_SEQ)) == s.ks_seq);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_KS_RX)) == s.ks_rx_ns);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_KS_TX)) == s.ks_tx_ns);
    CHECK(load_be<std::uint64_t>(b.subspan(HBP_OFF_KS_REPLY_SEQ)) == s.ks_reply_seq);
    CHECK(load_be<std::uint32_t>(b.subspan(HBP_OFF_RX_LOST)) == s.rx_lost);
    CHECK(HBP_HEAD <= 120);  // everything the probe reads lies before the names
}

TEST_CASE("a version 1 heartbeat, from a peer not yet upgraded, is still understood", "[unit][heartbeat]") {
    auto hb = sample();
    hb.wire_version = heartbeat_version_v1;
    std::array<std::byte, heartbeat_size> buf{};
    REQUIRE(encode_heartbeat(hb, key, buf) == heartbeat_size_v1);
    auto b = std::span<const std::byte>(buf).first(heartbeat_size_v1);
    CHECK(std::to_integer<int>(b[4]) == 1);
    CHECK(load_be<std::uint16_t>(b.subspan(6)) == 192);
    CHECK(std::string(reinterpret_cast<const char*>(b.data()) + 80) == "store-ha");  // names where v1 had them
    auto r = decode_heartbeat(b, key);
    REQUIRE(r.ok);
    CHECK(r.hb.wire_version == 1);
    CHECK(r.hb.seq == 42);
    CHECK(r.hb.echo_seq == 41);
    CHECK(r.hb.state == host_state::active);
    CHECK(r.hb.node == "alpha");
    CHECK(r.hb.version == "0.1.0");
    CHECK(r.hb.link_seq == 0);  // fields version 1 does not have
    CHECK(r.hb.ks_seq == 0);
    CHECK(decode_heartbeat(b.first(191), key).reason == drop_reason::truncated);
    auto flipped = buf;
    flipped[100] ^= std::byte{1};
    CHECK(decode_heartbeat(std::span<const std::byte>(flipped).first(heartbeat_size_v1), key).reason ==
          drop_reason::bad_mac);
}

TEST_CASE("fencing rides in version 3 and stays out of version 2", "[unit][heartbeat]") {
    auto hb = sample();
    hb.flags = hb_handover | hb_peer_outdated;
    hb.sync = sync_state::outdated;
    auto r = decode_heartbeat(encoded(hb), key);
    REQUIRE(r.ok);
    CHECK(r.hb.wire_version == heartbeat_version);
    CHECK(r.hb.flags == (hb_handover | hb_peer_outdated));
    CHECK(r.hb.sync == sync_state::outdated);

    // A version 2 peer would drop the datagram for either: it gets neither,
    // and OUTDATED as INCONSISTENT (not promotable to it either).
    hb.wire_version = heartbeat_version_v2;
    std::array<std::byte, heartbeat_size> buf{};
    REQUIRE(encode_heartbeat(hb, key, buf) == heartbeat_size);
    CHECK(std::to_integer<int>(buf[4]) == 2);
    r = decode_heartbeat(buf, key);
    REQUIRE(r.ok);
    CHECK(r.hb.wire_version == heartbeat_version_v2);
    CHECK(r.hb.flags == hb_handover);
    CHECK(r.hb.sync == sync_state::inconsistent);

    // Version 3 fields in a datagram that says version 2 (signed, so only a
    // faulty peer could send it) are refused as version 2 would refuse them.
    hb.wire_version = heartbeat_version;
    auto forged = encoded(hb);
    forged[4] = std::byte{2};
    auto mac = hmac_sha256(key, std::span<const std::byte>(forged).first(heartbeat_mac_offset));
    std::copy(mac.begin(), mac.end(), forged.begin() + heartbeat_mac_offset);
    CHECK(decode_heartbeat(forged, key).reason == drop_reason::bad_field);
}

TEST_CASE("any flipped bit is rejected", "[unit][heartbeat]") {
    auto good = encoded();
    for (std::size_t i = 0; i < heartbeat_size; ++i) {
        for (int bit : {0, 7}) {
            auto buf = good;
            buf[i] ^= std::byte(1 << bit);
            auto r = decode_heartbeat(buf, key);
            INFO("byte " << i << " bit " << bit);
            CHECK_FALSE(r.ok);
        }
    }
}

TEST_CASE("a heartbeat signed with another key is bad_mac", "[unit][heartbeat]") {
    auto buf = encoded();
    std::vector<std::byte> other(48, std::byte{0x5b});
    auto r = decode_heartbeat(buf, other);
    CHECK_FALSE(r.ok);
    CHECK(r.reason == drop_reason::bad_mac);
}

TEST_CASE("truncated, oversize and foreign datagrams are classified", "[unit][heartbeat]") {
    auto buf = encoded();
    CHECK(decode_heartbeat(std::span(buf).first(0), key).reason == drop_reason::truncated);
    CHECK(decode_heartbeat(std::span(buf).first(heartbeat_size - 1), key).reason == drop_reason::truncated);
    std::vector<std::byte> big(buf.begin(), buf.end());
    big.push_back(std::byte{0});
    CHECK(decode_heartbeat(big, key).reason == drop_reason::oversize);
    std::vector<std::byte> huge(65507, std::byte{0xff});
    CHECK(decode_heartbeat(huge, key).reason == drop_reason::oversize);
    auto wrong = buf;
    wrong[0] = std::byte{'X'};
    CHECK(decode_heartbeat(wrong, key).reason == drop_reason::bad_magic);
    auto ver = buf;
    ver[4] = std::byte{4};
    CHECK(decode_heartbeat(ver, key).reason == drop_reason::bad_version);
    auto v1_sized = buf;
    v1_sized[4] = std::byte{1};  // version 1 is 192 bytes long
    CHECK(decode_heartbeat(v1_sized, key).reason == drop_reason::oversize);
}

TEST_CASE("authentic but invalid fields are bad_field", "[unit][heartbeat]") {
    auto hb = sample();
    hb.flags = 0x8000;  // unknown flag
    CHECK(decode_heartbeat(encoded(hb), key).reason == drop_reason::bad_field);
    hb = sample();
    hb.role = 3;
    CHECK(decode_heartbeat(encoded(hb), key).reason == drop_reason::bad_field);
    hb = sample();
    hb.state = host_state::unknown;  // a node never sends UNKNOWN about itself
    CHECK(decode_heartbeat(encoded(hb), key).reason == drop_reason::bad_field);
    hb = sample();
    hb.sync_permille = 1001;
    CHECK(decode_heartbeat(encoded(hb), key).reason == drop_reason::bad_field);
    hb = sample();
    hb.seq = 0;
    CHECK(decode_heartbeat(encoded(hb), key).reason == drop_reason::bad_field);
}

TEST_CASE("the replay window accepts each sequence number once", "[unit][heartbeat]") {
    replay_window w;
    const std::uint64_t boot = 1000;
    CHECK(w.accept(boot, 10));
    CHECK_FALSE(w.accept(boot, 10));  // replayed
    CHECK(w.accept(boot, 12));
    CHECK(w.accept(boot, 11));        // reordered within the window
    CHECK_FALSE(w.accept(boot, 11));
    CHECK(w.accept(boot, 100));
    CHECK_FALSE(w.accept(boot, 36));  // older than the 64-entry window
    CHECK(w.accept(boot, 37));        // oldest still inside
    CHECK_FALSE(w.accept(boot - 1, 500));  // a replay of an earlier run of the peer
    CHECK(w.accept(boot + 1, 1));          // the peer restarted
    CHECK_FALSE(w.accept(boot, 101));      // the old run is over
}
