// agent: the DRBD backend's pure parts — the resource file rendered from
// Tandem's configuration, the drbdadm command lines, and the kernel's state
// (drbdsetup events2 for DRBD 9, /proc/drbd for 8.4) mapped to Tandem's.
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/process.hpp"
#include "tandem/agent/state.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::agent::drbd {

// DRBD's own ceiling for c-max-rate: 4 GiB/s, the seeds' 4096 MB/s.
inline constexpr std::uint64_t max_rate_kib = 4'194'304;

struct host {
    std::string name;
    ip_address address;  // where DRBD listens: the crossover address when one is configured
};

struct resource {
    std::string name = "store";
    unsigned minor = 0;
    std::string disk;  // the backing device ([replication] device)
    // The primary first, then the secondary, on both nodes alike: DRBD 9 numbers
    // its nodes by their order in the file.
    host first, second;
    std::uint16_t port = 7789;
    std::uint64_t rate_kib = 100 * 1024;
    std::uint64_t min_rate_kib = 20 * 1024;  // c-min-rate: [replication] resync_yield_rate; 0: never yields
    bool protocol_a = false;  // [replication] protocol = "A"; C by default
    std::string secret;  // derived from the cluster key (derive_secret)
    // DRBD's split-brain handler touches this file: 8.4 shows no more than
    // StandAlone in /proc/drbd, so this is how Tandem learns of it. "" = no handler.
    std::string split_brain_flag;
};

// The resource of this node's configuration.
resource from_config(const config& c);
// The peer-authentication secret: HMAC-SHA256 of the cluster key over a fixed
// label, 40 hex digits (DRBD allows 63 characters). Both nodes derive the same.
std::string derive_secret(std::span<const std::byte> cluster_key);
// What DRBD would refuse or misread, each naming the value and what is allowed;
// empty when the resource can be rendered.
std::vector<std::string> validate(const resource& r);
// The resource file, in the subset of drbd.conf that both the 8.4 and the 9
// parsers of drbd-utils accept. Split brain is never resolved automatically.
std::string render(const resource& r);

// drbdadm's verbs as Tandem uses them.
enum class action {
    create_md, dump_md, apply_al, up, down, primary, secondary, connect, disconnect, invalidate, verify, adjust,
    discard_my_data,  // connect, throwing away this node's changes after a split brain
    force_primary,    // primary --force: a new cluster's first full sync starts from this node
};
[[nodiscard]] std::string_view to_string(action a) noexcept;
// argv of `drbdadm -c CONF VERB RESOURCE` (create-md is forced: Tandem runs it
// only where dump-md finds no metadata).
std::vector<std::string> command(action a, const std::string& conf, const std::string& resource_name,
                                 const std::string& drbdadm = "drbdadm");

// The kernel's view of one DRBD device and its one peer.
struct kernel_state {
    std::string role;         // Primary, Secondary, Unknown
    std::string peer_role;
    std::string disk;         // UpToDate, Inconsistent, Outdated, Diskless, ...
    std::string peer_disk;
    std::string connection;   // Connected, Connecting, StandAlone, ... (8.4: the cs: field)
    std::string replication;  // Established, SyncSource, SyncTarget, ... (9; 8.4 folds it into cs:)
    std::optional<double> done_percent;  // of a running resync
    std::optional<std::uint64_t> eta_s;
    std::optional<std::uint64_t> out_of_sync_kib;  // 8.4 oos:, 9 out-of-sync: (with --statistics)
    bool split_brain = false;  // a split-brain helper ran, or StandAlone followed it
};

// /proc/drbd of DRBD 8.4 for one minor; nullopt if the minor is not there.
std::optional<kernel_state> parse_proc_drbd(std::string_view text, unsigned minor);
// One line of `drbdsetup events2 --statistics` (DRBD 9) folded into `s`; lines
// for other resources or volumes are ignored. Returns whether anything changed.
bool apply_events2(kernel_state& s, std::string_view line, const std::string& resource_name, unsigned volume = 0);

// What Tandem makes of it: the sync state, and for Synchronizing the progress in permille.
struct mapped {
    sync_state sync = sync_state::inconsistent;
    std::uint16_t permille = 0;
    std::string detail;  // for the status and the operator: what DRBD says, and the way out if any
    // In the replication engine's terms, for `tandemctl sync` and `status --json`.
    bool connected = false;  // the replication link is up (Established or a resync)
    bool running = false;    // a resync runs (SyncSource/SyncTarget and their preludes)
    bool to_peer = false;    // ... with this node as its source
};
mapped map_state(const kernel_state& s);

// Why the resource needs `drbdadm adjust` to come back, or nullopt when DRBD
// is up or waits by itself. DRBD gives up for good (StandAlone) when it cannot
// bind its local address, e.g. a link configured after tandemd ran `adjust`,
// or when a handshake fails; after a split brain it is the operator's turn.
std::optional<std::string> needs_adjust(const kernel_state& s);

// What this machine lacks for backend "drbd", naming what to install or load;
// "" when nothing. With `load_module`, a missing drbd.ko is loaded first.
std::string check_host(const config& c, bool load_module);
// The DRBD major version the kernel runs (8 or 9, from /proc/drbd), 0 if none.
int kernel_version();

// The DRBD resource of this node, as tandemd drives it. The resource file is
// written at construction (mode 0600: it holds the peer secret).
class backend {
public:
    explicit backend(const config& c);
    [[nodiscard]] const resource& res() const noexcept { return res_; }
    [[nodiscard]] const std::string& conf() const noexcept { return conf_; }
    [[nodiscard]] std::string device() const;
    // `drbdadm ACTION store` in a child; its output goes to the journal.
    boost::asio::awaitable<process_result> run(action a) const;
    // A new rate in the file; `drbdadm adjust` applies it to the running resource.
    void set_rate(std::uint64_t kib, std::uint64_t min_kib);

private:
    void write() const;
    resource res_;
    std::string conf_;
};

}  // namespace tandem::agent::drbd
