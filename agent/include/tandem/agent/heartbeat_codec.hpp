// agent: the heartbeat datagram — fixed layout, network byte order, HMAC-SHA256, replay window.
#pragma once

#include "tandem/agent/state.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tandem::agent {

// Layout (all integers big-endian; names zero-padded UTF-8):
//   0  u32 magic 'TNDH'      4  u8 version     5  u8 type (1 = heartbeat)
//   6  u16 length (232)      8  u64 boot_id    16 u64 seq
//   24 u64 send_mono_ns      32 u64 echo_seq   40 u64 echo_mono_ns
//   48 u64 echo_hold_ns      56 u64 generation
//   64 u8 role  65 u8 state  66 u8 mode  67 u8 sync  68 u16 flags  70 u16 sync_permille
//   72 u8 link  73..75 zero  76 u32 link_seq
//   80 u64 ks_seq  88 u64 ks_rx_ns  96 u64 ks_tx_ns  104 u64 ks_reply_seq
//   112 u32 rx_lost  116..119 zero
//   120 cluster[32]  152 node[32]  184 version[16]
//   200 HMAC-SHA256 over bytes 0..199
// The latency probes (ebpf/) read bytes 0..119 in the kernel: keep those offsets
// in step with ebpf/src/hb_probe.bpf.c.
inline constexpr std::uint32_t heartbeat_magic = 0x544E4448;  // "TNDH"
// Version 3 has version 2's layout and adds what version 2 decoders refuse:
// the flag hb_peer_outdated and the sync state OUTDATED (fencing, see
// docs/replication-engine.md). Spoken to a version 2 peer, both are left out
// (OUTDATED goes as INCONSISTENT: not promotable either way).
inline constexpr std::uint8_t heartbeat_version = 3;
inline constexpr std::uint8_t heartbeat_version_v2 = 2;
inline constexpr std::size_t heartbeat_size = 232;
inline constexpr std::size_t heartbeat_mac_offset = 200;
// Version 1, the format before the latency probes: bytes 0..72 as above, 73..79
// zero, cluster[32] at 80, node[32] at 112, version[16] at 144, MAC at 160.
// Still decoded, and spoken to a peer that speaks it, so that a cluster being
// upgraded one node at a time keeps hearing itself.
inline constexpr std::uint8_t heartbeat_version_v1 = 1;
inline constexpr std::size_t heartbeat_size_v1 = 192;
inline constexpr std::size_t heartbeat_mac_offset_v1 = 160;
inline constexpr std::size_t name_field = 32;
inline constexpr std::size_t version_field = 16;
static_assert(heartbeat_mac_offset + 32 == heartbeat_size);

// Requests and facts a node raises to its peer.
enum heartbeat_flags : std::uint16_t {
    hb_request_takeover = 1u << 0,   // operator ran `takeover` on the sender: please release
    hb_handover = 1u << 1,           // sender released on purpose: the receiver should claim
    hb_connectivity_lost = 1u << 2,  // sender (active) failed its connectivity test
    hb_shutting_down = 1u << 3,      // sender is stopping cleanly: the receiver may claim at once
    // Version 3: the sender is primary and writes without the receiver (no
    // replication connection): the receiver's copy is outdated.
    hb_peer_outdated = 1u << 4,
    hb_known_flags_v2 = 0x000f,
    hb_known_flags = 0x001f,
};

struct heartbeat {
    std::uint64_t boot_id = 0;  // max(realtime ns, previous + 1): increases across restarts
    std::uint64_t seq = 0;
    std::uint64_t send_mono_ns = 0;
    std::uint64_t echo_seq = 0;  // last seq the sender received from us, 0 if none
    std::uint64_t echo_mono_ns = 0;  // our send time of echo_seq, echoed back
    std::uint64_t echo_hold_ns = 0;  // how long the sender held it before replying
    std::uint64_t generation = 0;  // activation generation the sender knows
    std::uint8_t role = 0;         // node_role
    host_state state = host_state::initializing;
    host_mode mode = host_mode::online;
    sync_state sync = sync_state::none;
    std::uint16_t flags = 0;
    std::uint16_t sync_permille = 0;
    std::uint8_t link = 0;  // index of the link it was sent on
    std::uint32_t link_seq = 0;  // per link, from 1: gaps are heartbeats lost on this link
    // Kernel timestamps of the sender's answer to one of our heartbeats (see
    // ebpf/hb_stats.h): our ks_seq reached its kernel at ks_rx_ns and its
    // ks_reply_seq, the answer, left at ks_tx_ns (the sender's monotonic clock).
    std::uint64_t ks_seq = 0, ks_rx_ns = 0, ks_tx_ns = 0, ks_reply_seq = 0;
    std::uint32_t rx_lost = 0;  // our heartbeats the sender never received on this link
    std::uint8_t wire_version = heartbeat_version;  // 1: the fields from link_seq on are absent
    std::string cluster;
    std::string node;
    std::string version;
};

enum class drop_reason : std::uint8_t {
    truncated,
    oversize,
    bad_magic,
    bad_version,
    bad_length,
    bad_mac,
    bad_field,
    replayed,
    wrong_cluster,
    wrong_sender,
    count_
};
[[nodiscard]] std::string_view to_string(drop_reason r) noexcept;

// Writes the datagram in hb.wire_version's format and signs it; returns its
// length (heartbeat_size, or heartbeat_size_v1). Names longer than their field
// are refused by the configuration (config.cpp checks against name_field and
// version_field).
std::size_t encode_heartbeat(const heartbeat& hb, std::span<const std::byte> key,
                             std::span<std::byte, heartbeat_size> out);

struct decode_result {
    bool ok = false;
    drop_reason reason = drop_reason::truncated;
    heartbeat hb;
};

// Authenticates before it trusts any field; checks every enum and padding byte.
[[nodiscard]] decode_result decode_heartbeat(std::span<const std::byte> in, std::span<const std::byte> key);

// Rejects datagrams seen before: a 64-entry window below the highest sequence
// number of the newest boot_id. A boot_id lower than the current one is a replay
// of an earlier run of the peer (boot ids only increase: runtime.cpp next_boot_id).
class replay_window {
public:
    [[nodiscard]] bool accept(std::uint64_t boot_id, std::uint64_t seq) noexcept;
    void reset() noexcept { *this = replay_window{}; }

private:
    std::uint64_t boot_id_ = 0;
    std::uint64_t highest_ = 0;
    std::uint64_t bitmap_ = 0;  // bit i: highest_ - i was seen
    bool any_ = false;
};

}  // namespace tandem::agent
