// replication: the engine — one authenticated connection to the peer, the sync decision, resync and real-time writes.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/replication/metadata.hpp"
#include "tandem/replication/pump.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::replication {

// How an application write completes (docs/replication-engine.md, "Write protocols").
enum class write_protocol : std::uint8_t {
    c,  // when both nodes have written it (the default)
    a,  // when the local disk has it; at most `protocol_a_window` writes unacknowledged by the peer
};

struct engine_config {
    std::string node_name;
    std::string device;         // the volume: a block device, or a regular file in tests
    std::string metadata_path;  // created on first start
    // Exactly one side dials (the cluster's primary-role node); the other listens.
    // With one connector there is never a race of two connections.
    bool dialer = true;
    std::string local_address;  // bound when listening and when dialing (the crossover address if any)
    std::string peer_address;
    std::string bind_device;    // SO_BINDTODEVICE when not empty (the crossover interface)
    std::uint16_t port = 7789;
    std::vector<std::byte> key;  // the cluster key; never logged
    std::uint64_t rate_bps = mib_per_s(default_rate_mib);
    // The resync's rate while application writes arrive (it yields to them);
    // 0: never yields. Changeable at runtime (set_yield_rate).
    std::uint64_t yield_rate_bps = mib_per_s(default_yield_rate_mib);
    // A peer silent this long (no frame, no pong) is dropped; also the stall limit mid-frame.
    std::chrono::milliseconds peer_timeout{10'000};
    std::chrono::milliseconds retry{500};  // between connection attempts
    write_protocol protocol = write_protocol::c;
    unsigned protocol_a_window = 256;
    // Fencing (docs/replication-engine.md, "Fencing"): a primary that loses its
    // peer in sync, or is promoted without a connection, holds application
    // writes until peer_fenced() says the peer can no longer be promoted with
    // its old copy. Only for a caller that can learn that (tandemd, through
    // the heartbeats); off, writes go on at once.
    bool fencing = false;
};

enum class link_state : std::uint8_t {
    stopped,      // the engine thread is not running
    connecting,   // no peer: dialing or listening; writes as primary mark the dirty bitmap
    handshake,    // hello, authentication, decision, bitmap exchange
    sync_source,  // resynchronizing the peer
    sync_target,  // being resynchronized: local data is inconsistent until the end
    connected,    // in sync: writes are replicated as they happen
    refused,      // split brain or unrelated data: nothing is replicated until an operator decides
};
[[nodiscard]] std::string_view to_string(link_state s) noexcept;

struct engine_status {
    link_state link = link_state::stopped;
    bool primary = false;
    bool consistent = false;
    bool split_brain = false;
    bool crashed_primary = false;
    bool resync_pending = false;  // a resync into this node started and has not finished
    bool outdated = false;        // the primary wrote without this node (persisted): not promotable
    bool fence_pending = false;   // primary: writes wait until the peer is fenced or connected again
    unsigned writes_held = 0;     // application writes waiting now (the fence, or a resync's last pass)
    std::string peer;      // the peer's node name once authenticated
    std::string decision;  // the last sync decision and the rule that made it
    std::string rule;
    std::string last_error;
    std::uint64_t volume_size = 0;
    std::uint64_t dirty_bytes = 0;      // marked in the bitmap: what a resync would send
    std::uint64_t sync_done = 0;        // bytes of the running (or last) resync
    std::uint64_t sync_total = 0;
    double sync_rate_bps = 0;           // over the last seconds of status reads (else since the start)
    double sync_eta_s = 0;
    std::uint64_t rate_limit_bps = 0;
    std::uint64_t hot_extents = 0;      // activity log: extents with recent writes
    std::uint64_t connections = 0;      // authenticated connections since start
    std::uint64_t resync_bytes_sent = 0;  // as source, since start
    generation_ids gen;
    // Online verify (the last one, or the one running).
    bool verify_running = false;
    std::uint64_t verify_done = 0, verify_total = 0;
    std::vector<byte_range> verify_mismatches;  // merged ranges, at most max_reported_mismatches
    std::uint64_t verify_mismatched_bytes = 0;
};
inline constexpr std::size_t max_reported_mismatches = 64;

// Every event the engine reports, from its own thread and sometimes under its
// lock: keep the callback short and never call back into the engine from it.
using engine_event_fn = std::function<void(std::string_view kind, const std::string& detail)>;

class engine {
public:
    // Opens the volume and its metadata (creating fresh metadata on first use) and
    // checks that they belong together. Nothing runs until start().
    // Fails with errc::volume_changed when `device` is not the volume the
    // metadata was made for (volume::identity(), recorded the first time it is known).
    [[nodiscard]] static result<std::unique_ptr<engine>> open(engine_config cfg, engine_event_fn on_event);
    // The operator's answer to volume_changed when the data is the same (restored,
    // moved, renamed): records the device's current identity in the metadata.
    // Not while an engine has the metadata open (it is locked). Says what it did.
    [[nodiscard]] static result<std::string> adopt_volume(const std::string& device, const std::string& metadata_path);
    ~engine();
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    void start();
    // Ends the connection and the thread; commits the metadata (a clean stop).
    void stop();

    // Failover phase 1. promote refuses data that is not consistent and a
    // recorded split brain. It starts a new generation (the writes are ours
    // alone until the peer is back) and, when connected, ends the connection:
    // the next handshake tells the peer the role, and refuses two primaries.
    // demote is a clean demotion (md_primary cleared).
    [[nodiscard]] result<void> promote(std::string& why_not);
    [[nodiscard]] result<void> demote();

    // Fencing, on the primary: whether writes wait for the peer to be fenced,
    // and the caller's word that it is (the peer reports an outdated copy, or
    // it is lost). `how` goes to the log.
    [[nodiscard]] bool fence_pending() const;
    void peer_fenced(const std::string& how);
    // Whether this node is primary and writes without its peer (no connection
    // in sync): the peer's copy is outdated from now on.
    [[nodiscard]] bool writing_without_peer() const;
    // Fencing, on the secondary: the primary says it writes without this node,
    // or (`stopping`) this node stops while the primary goes on. Persists the
    // outdated mark; promote() refuses until a resync brings the copy up to
    // date. Ignored (false) on a primary, on inconsistent data, and while
    // connected unless stopping; true when this call outdated the copy.
    [[nodiscard]] bool outdate(const std::string& why, bool stopping = false);
    // The operator's forced takeover: promote this copy although it is outdated.
    // Returns whether it was.
    bool clear_outdated();

    void set_rate(std::uint64_t bps);
    // The resync's rate while application writes arrive; 0: it never yields.
    void set_yield_rate(std::uint64_t bps);
    // Split-brain resolution on the node whose data is to be overwritten: its
    // metadata becomes fresh, so the next connection brings a full resync from the
    // peer. Refused on the primary and when there is nothing to resolve.
    [[nodiscard]] result<void> discard_local(std::string& why_not);

    // Online verify: compares both sides chunk by chunk (XXH3 per 4 KiB) while
    // connected and in sync, and reports the ranges that differ (status and a
    // replication.verify_done event). Writes during the verify may show as
    // differences in the blocks they touch. With `repair` (on the primary only),
    // the differing chunks are marked in the bitmap and the engine reconnects:
    // the hello's resend flag brings a bitmap resync of exactly those chunks.
    [[nodiscard]] result<void> verify(std::string& why_not, bool repair = false);

    // An application write of `bytes` at `offset` (multiples of 512). Returns
    // when it is complete under the write protocol. data_fua: durable on both
    // before it returns. Only the primary writes.
    [[nodiscard]] result<void> write(std::uint64_t offset, std::span<const std::byte> bytes, std::uint32_t flags = 0);
    // A discard: makes [offset, offset + length) read as zeros on both nodes
    // (volume::zero(); the peer's copy through zero frames of at most
    // max_zero_length). Multiples of the logical block size; returns as write()
    // does. operation_not_supported while connected to a peer without it.
    [[nodiscard]] result<void> zero(std::uint64_t offset, std::uint64_t length);
    // Flush: everything written before is durable locally and (protocol C, connected) on the peer.
    [[nodiscard]] result<void> flush();
    // Reads the local copy (offset and length multiples of 512). The front end
    // reads through this on the primary, whose copy is always the current one.
    [[nodiscard]] result<void> read(std::uint64_t offset, std::span<std::byte> out) const;
    [[nodiscard]] std::uint64_t size() const noexcept;
    [[nodiscard]] bool primary() const noexcept;

    [[nodiscard]] engine_status status() const;
    // The running resync's progress in thousandths, without taking the engine's
    // lock (a checkpoint may hold it through an fdatasync): heartbeats read it.
    [[nodiscard]] std::uint16_t sync_permille() const noexcept;

private:
    struct impl;
    explicit engine(std::unique_ptr<impl> p);
    std::unique_ptr<impl> p_;
};

}  // namespace tandem::replication
