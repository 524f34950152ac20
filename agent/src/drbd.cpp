// agent: rendering DRBD's resource, drbdadm's command lines, and reading the
// kernel's state back (events2 for DRBD 9, /proc/drbd for 8.4).
#include "tandem/agent/drbd.hpp"

#include "tandem/base/hmac.hpp"
#include "tandem/base/kmod.hpp"
#include "tandem/base/log.hpp"
#include "tandem/netlink/vip.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace tandem::agent::drbd {

namespace {

bool word_ok(std::string_view s) {
    return !s.empty() && s.size() <= 63 && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
               c == '.';
    });
}

bool path_ok(std::string_view s) {
    return s.size() > 1 && s.front() == '/' && std::none_of(s.begin(), s.end(), [](char c) {
               return c == ';' || c == '{' || c == '}' || c == '"' || c == '#' || c == '\\' ||
                      static_cast<unsigned char>(c) <= ' ';
           });
}

std::string address_line(const ip_address& a, std::uint16_t port) {
    auto text = netlink::address_string(a);
    return a.family == AF_INET6 ? fmt::format("ipv6 [{}]:{}", text, port) : fmt::format("ipv4 {}:{}", text, port);
}

// "key:value" tokens of an events2 line.
std::string_view field(std::string_view line, std::string_view key) {
    std::size_t pos = 0;
    while (pos < line.size()) {
        auto end = line.find(' ', pos);
        if (end == std::string_view::npos) end = line.size();
        auto tok = line.substr(pos, end - pos);
        if (tok.size() > key.size() && tok.substr(0, key.size()) == key && tok[key.size()] == ':')
            return tok.substr(key.size() + 1);
        pos = end + 1;
    }
    return {};
}

std::optional<double> number(std::string_view s) {
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc()) return std::nullopt;
    return v;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

std::string derive_secret(std::span<const std::byte> cluster_key) {
    static constexpr std::string_view label = "tandem drbd shared-secret 1";
    auto mac = hmac_sha256(cluster_key, std::as_bytes(std::span(label.data(), label.size())));
    std::string hex;
    for (std::size_t i = 0; i < 20; ++i) hex += fmt::format("{:02x}", std::to_integer<unsigned>(mac[i]));
    return hex;
}

resource from_config(const config& c) {
    resource r;
    r.disk = c.replication.device;
    r.port = c.replication.port;
    r.rate_kib = std::uint64_t{c.replication.rate_mib} * 1024;
    r.min_rate_kib = std::uint64_t{c.replication.yield_rate_mib} * 1024;
    r.protocol_a = c.replication.protocol_a;
    r.secret = derive_secret(c.auth.key);
    r.split_brain_flag = c.node.state_dir + "/drbd/split-brain";
    bool xo = c.crossover.address && c.crossover.peer_address;
    host self{c.node.name, xo ? *c.crossover.address : c.node.address};
    host peer{c.peer.name, xo ? *c.crossover.peer_address : c.peer.address};
    r.first = c.node.role == node_role::primary ? self : peer;
    r.second = c.node.role == node_role::primary ? peer : self;
    return r;
}

std::vector<std::string> validate(const resource& r) {
    std::vector<std::string> out;
    if (!word_ok(r.name))
        out.push_back(fmt::format("resource name \"{}\": letters, digits, '-', '_' and '.' only, 1 to 63 of them", r.name));
    if (r.minor > 1'048'575) out.push_back(fmt::format("minor {}: DRBD allows 0 to 1048575", r.minor));
    if (!path_ok(r.disk))
        out.push_back(fmt::format("replication.device \"{}\": DRBD needs an absolute device path without blanks, "
                                  "quotes or any of ; {{ }} #",
                                  r.disk));
    for (const host* h : {&r.first, &r.second})
        if (!word_ok(h->name))
            out.push_back(fmt::format("host name \"{}\": DRBD's \"on\" sections take letters, digits, '-', '_' and "
                                      "'.' only (and it must be the node's uname -n)",
                                      h->name));
    if (r.first.name == r.second.name) out.push_back(fmt::format("both hosts are named \"{}\"", r.first.name));
    if (r.first.address == r.second.address)
        out.push_back(fmt::format("both hosts have the address {}", netlink::address_string(r.first.address)));
    if (r.first.address.family != r.second.address.family)
        out.push_back("the two hosts' addresses must both be IPv4 or both IPv6");
    if (r.port == 0) out.push_back("replication.port 0: DRBD needs 1 to 65535");
    if (r.rate_kib < 1024 || r.rate_kib > max_rate_kib)
        out.push_back(fmt::format("replication.rate = {} MiB/s: DRBD allows 1 to 4096 MiB/s (c-max-rate up to {} KiB/s)",
                                  r.rate_kib / 1024, max_rate_kib));
    if (!r.split_brain_flag.empty() && !path_ok(r.split_brain_flag))
        out.push_back(fmt::format("node.state_dir: \"{}\" cannot be written into drbd.conf (blanks, quotes or ; {{ }} #)",
                                  r.split_brain_flag));
    if (r.secret.empty() || r.secret.size() > 63 || !word_ok(r.secret))
        out.push_back("the shared secret must be 1 to 63 letters or digits (derive_secret makes 40)");
    return out;
}

std::string render(const resource& r) {
    std::string s = fmt::format(
        "# Written by tandemd from its configuration; edits here are overwritten.\n"
        "resource {} {{\n"
        "    protocol {};\n"
        "    net {{\n"
        "        cram-hmac-alg sha256;\n"
        "        shared-secret \"{}\";\n"
        "        verify-alg crc32c;\n"
        "        after-sb-0pri disconnect;\n"
        "        after-sb-1pri disconnect;\n"
        "        after-sb-2pri disconnect;\n"
        "        rr-conflict disconnect;\n"
        "    }}\n"
        "    disk {{\n"
        "        c-max-rate {}k;\n"
        "        resync-rate {}k;\n"
        "        c-min-rate {}k;\n"
        "    }}\n",
        r.name, r.protocol_a ? 'A' : 'C', r.secret, r.rate_kib, r.rate_kib, r.min_rate_kib);
    if (!r.split_brain_flag.empty())
        s += fmt::format(
            "    handlers {{\n"
            "        split-brain \"/usr/bin/touch {}\";\n"
            "    }}\n",
            r.split_brain_flag);
    for (const host* h : {&r.first, &r.second})
        s += fmt::format(
            "    on {} {{\n"
            "        device /dev/drbd{} minor {};\n"
            "        disk {};\n"
            "        meta-disk internal;\n"
            "        address {};\n"
            "    }}\n",
            h->name, r.minor, r.minor, r.disk, address_line(h->address, r.port));
    s += "}\n";
    return s;
}

std::string_view to_string(action a) noexcept {
    switch (a) {
        case action::create_md: return "create-md";
        case action::dump_md: return "dump-md";
        case action::apply_al: return "apply-al";
        case action::force_primary: return "primary";
        case action::discard_my_data: return "connect";
        case action::up: return "up";
        case action::down: return "down";
        case action::primary: return "primary";
        case action::secondary: return "secondary";
        case action::connect: return "connect";
        case action::disconnect: return "disconnect";
        case action::invalidate: return "invalidate";
        case action::verify: return "verify";
        case action::adjust: return "adjust";
    }
    return "?";
}

std::vector<std::string> command(action a, const std::string& conf, const std::string& resource_name,
                                 const std::string& drbdadm) {
    std::vector<std::string> argv = {drbdadm, "-c", conf};
    if (a == action::create_md) argv.push_back("--force");  // no questions: only ever run on a new disk
    argv.emplace_back(to_string(a));
    if (a == action::discard_my_data) argv.push_back("--discard-my-data");
    if (a == action::force_primary) argv.push_back("--force");
    argv.push_back(resource_name);
    return argv;
}

std::optional<kernel_state> parse_proc_drbd(std::string_view text, unsigned minor) {
    const std::string head = fmt::format("{}: cs:", minor);
    std::optional<kernel_state> out;
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        auto t = line.find_first_not_of(' ');
        if (t == std::string_view::npos) continue;
        auto body = line.substr(t);
        if (!out) {
            if (!starts_with(body, head)) continue;
            kernel_state s;
            auto cs = field(body, "cs");
            auto ro = field(body, "ro");
            auto ds = field(body, "ds");
            auto slash = [](std::string_view v, bool second) {
                auto p = v.find('/');
                return std::string(p == std::string_view::npos ? (second ? "" : v) : (second ? v.substr(p + 1) : v.substr(0, p)));
            };
            s.role = slash(ro, false);
            s.peer_role = slash(ro, true);
            s.disk = slash(ds, false);
            s.peer_disk = slash(ds, true);
            std::string c(cs);
            // 8.4 folds the replication state into cs:.
            if (c == "Connected") {
                s.connection = c;
                s.replication = "Established";
            } else if (starts_with(c, "Sync") || starts_with(c, "PausedSync") || starts_with(c, "StartingSync") ||
                       starts_with(c, "WFBitMap") || c == "WFSyncUUID" || starts_with(c, "Verify") || c == "Ahead" ||
                       c == "Behind") {
                s.connection = "Connected";
                s.replication = c;
            } else {
                s.connection = c;
            }
            out = s;
            continue;
        }
        // The lines that follow, up to the next minor.
        if (std::isdigit(static_cast<unsigned char>(body[0])) && body.find(": cs:") != std::string_view::npos) break;
        if (auto oos = field(body, "oos"); !oos.empty())
            if (auto v = number(oos)) out->out_of_sync_kib = static_cast<std::uint64_t>(*v);
        if (auto p = body.find("sync'ed:"); p != std::string_view::npos) {
            auto v = body.substr(p + 8);
            v.remove_prefix(std::min(v.find_first_not_of(' '), v.size()));
            out->done_percent = number(v.substr(0, v.find('%')));
        }
        if (auto p = body.find("finish:"); p != std::string_view::npos) {
            auto v = body.substr(p + 7);
            v.remove_prefix(std::min(v.find_first_not_of(' '), v.size()));
            unsigned h = 0, m = 0, sec = 0;
            if (std::sscanf(std::string(v.substr(0, v.find(' '))).c_str(), "%u:%u:%u", &h, &m, &sec) == 3)
                out->eta_s = std::uint64_t{h} * 3600 + m * 60 + sec;
        }
    }
    // 8.4 shows no more than StandAlone after a split brain: the split brain
    // itself reaches Tandem through DRBD's split-brain handler (the caller sets it).
    return out;
}

bool apply_events2(kernel_state& s, std::string_view line, const std::string& resource_name, unsigned volume) {
    auto sp = line.find(' ');
    if (sp == std::string_view::npos) return false;
    auto kind = line.substr(0, sp);
    auto rest = line.substr(sp + 1);
    auto object = rest.substr(0, rest.find(' '));
    if (field(rest, "name") != resource_name) return false;
    auto vol = field(rest, "volume");
    if (!vol.empty() && vol != std::to_string(volume)) return false;
    kernel_state before = s;
    auto set = [&](std::string& target, std::string_view key) {
        if (auto v = field(rest, key); !v.empty()) target = std::string(v);
    };
    if (kind == "call" && object == "helper") {
        auto helper = field(rest, "helper");
        if (helper == "split-brain" || helper == "initial-split-brain") s.split_brain = true;
    } else if (kind == "destroy" && object == "connection") {
        s.connection = "StandAlone";
        s.replication.clear();
        s.peer_role = "Unknown";
        s.peer_disk = "DUnknown";
    } else if (kind == "exists" || kind == "create" || kind == "change") {
        if (object == "resource") set(s.role, "role");
        else if (object == "connection") {
            set(s.connection, "connection");
            set(s.peer_role, "role");
            if (s.connection == "Connected") s.split_brain = false;  // the operator resolved it
        } else if (object == "device") {
            set(s.disk, "disk");
        } else if (object == "peer-device") {
            set(s.replication, "replication");
            set(s.peer_disk, "peer-disk");
            if (auto d = number(field(rest, "done"))) s.done_percent = d;
            if (auto o = number(field(rest, "out-of-sync"))) s.out_of_sync_kib = static_cast<std::uint64_t>(*o);
        }
    }
    if (!starts_with(s.replication, "Sync") && !starts_with(s.replication, "PausedSync")) {
        s.done_percent.reset();
        s.eta_s.reset();
    }
    return s.role != before.role || s.peer_role != before.peer_role || s.disk != before.disk ||
           s.peer_disk != before.peer_disk || s.connection != before.connection || s.replication != before.replication ||
           s.done_percent != before.done_percent || s.split_brain != before.split_brain ||
           s.out_of_sync_kib != before.out_of_sync_kib;
}

mapped map_state(const kernel_state& s) {
    mapped m;
    auto permille = [&] {
        return static_cast<std::uint16_t>(std::clamp(s.done_percent.value_or(0) * 10, 0.0, 1000.0));
    };
    m.connected = s.connection == "Connected" || s.replication == "Established" || s.replication.rfind("Sync", 0) == 0;
    if (s.split_brain) {
        m.sync = sync_state::diverged;
        m.detail = "DRBD detected a split brain and disconnected: both nodes wrote while apart. On the node whose "
                   "changes are to be discarded run `tandemctl discard-local`; a resync from the other follows";
        return m;
    }
    bool target = starts_with(s.replication, "SyncTarget") || s.replication == "PausedSyncT" ||
                  s.replication == "StartingSyncT" || s.replication == "WFBitMapT" || s.replication == "WFSyncUUID";
    bool source = starts_with(s.replication, "SyncSource") || s.replication == "PausedSyncS" ||
                  s.replication == "StartingSyncS" || s.replication == "WFBitMapS";
    m.running = target || source;
    m.to_peer = source;
    if (target) {
        m.sync = sync_state::synchronizing;
        m.permille = permille();
        m.detail = fmt::format("DRBD {}: receiving the peer's data, {:.1f} % done{}", s.replication,
                               s.done_percent.value_or(0),
                               s.eta_s ? fmt::format(", about {} s left", *s.eta_s) : std::string());
        return m;
    }
    if (s.disk == "UpToDate") {
        m.sync = sync_state::up_to_date;
        m.permille = 1000;
        if (source)
            m.detail = fmt::format("DRBD {}: the peer is catching up, {:.1f} % done", s.replication,
                                   s.done_percent.value_or(0));
        else if (s.peer_disk == "UpToDate")
            m.detail = "DRBD: both disks UpToDate";
        else
            m.detail = fmt::format("DRBD: local disk UpToDate, peer {} ({})", s.peer_disk.empty() ? "DUnknown" : s.peer_disk,
                                   s.connection.empty() ? "not connected" : s.connection);
        return m;
    }
    m.sync = s.disk == "Outdated" ? sync_state::outdated : sync_state::inconsistent;
    m.detail = fmt::format("DRBD: local disk {}{}: not promotable", s.disk.empty() ? "unknown" : s.disk,
                           s.disk == "Outdated" || s.disk == "Consistent"
                               ? " (the peer may hold newer data: connect it; see docs/drbd.md before forcing "
                                 "anything)"
                               : "");
    return m;
}

std::optional<std::string> needs_adjust(const kernel_state& s) {
    if (s.split_brain) return std::nullopt;
    if (s.connection.empty() || s.connection == "Unconfigured") return "not configured in the kernel";
    if (s.connection == "StandAlone") return "StandAlone (DRBD stopped trying to connect)";
    return std::nullopt;
}

namespace {

bool in_path(const std::string& tool) {
    const char* path = std::getenv("PATH");
    std::string_view dirs = path ? path : "/usr/sbin:/usr/bin:/sbin:/bin";
    while (!dirs.empty()) {
        auto colon = dirs.find(':');
        auto dir = dirs.substr(0, colon);
        if (!dir.empty() && ::access((std::string(dir) + "/" + tool).c_str(), X_OK) == 0) return true;
        if (colon == std::string_view::npos) break;
        dirs.remove_prefix(colon + 1);
    }
    return false;
}


}  // namespace

int kernel_version() {
    std::ifstream in("/proc/drbd");
    std::string word, v;
    if (!(in >> word >> v) || word != "version:") return 0;
    return v.rfind("9.", 0) == 0 ? 9 : v.rfind("8.", 0) == 0 ? 8 : 0;
}

std::string check_host(const config& c, bool load_module) {
    auto problems = validate(from_config(c));
    if (!problems.empty()) return "replication.backend = \"drbd\": " + fmt::format("{}", fmt::join(problems, "; "));
    if (!in_path("drbdadm") || !in_path("drbdsetup"))
        return "replication.backend = \"drbd\" needs drbdadm and drbdsetup, which are not in PATH: install the "
               "drbd-utils package";
    // A check only asks whether the module could be loaded; tandemd starting loads it.
    if (kernel_version() == 0 &&
        !(load_module ? load_kernel_module("drbd") && kernel_version() != 0 : kernel_module_available("drbd")))
        return "replication.backend = \"drbd\" needs the drbd kernel module, which is not loaded" +
               std::string(load_module ? " and modprobe drbd could not load it" : " and modprobe cannot find it") +
               ": run `modprobe drbd` (Debian's own kernel ships drbd.ko 8.4), or use backend \"uring\" on a "
               "kernel without it";
    utsname u{};
    if (::uname(&u) == 0 && c.node.name != u.nodename)
        return fmt::format("replication.backend = \"drbd\": DRBD finds this node's section by host name, and "
                           "uname -n is \"{}\" while node.name is \"{}\": give the host the node's name",
                           u.nodename, c.node.name);
    return "";
}

backend::backend(const config& c) : res_(from_config(c)) {
    if (auto v = validate(res_); !v.empty())
        throw std::runtime_error(fmt::format("replication.backend = \"drbd\": {}", fmt::join(v, "; ")));
    auto dir = c.node.state_dir + "/drbd";
    std::filesystem::create_directories(dir);
    conf_ = dir + "/" + res_.name + ".res";
    write();
}

void backend::set_rate(std::uint64_t kib, std::uint64_t min_kib) {
    res_.rate_kib = kib;
    res_.min_rate_kib = min_kib;
    write();
}

void backend::write() const {
    // Written whole and renamed: drbdadm never reads half a file.
    auto tmp = conf_ + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    auto text = render(res_);
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), conf_.c_str()) != 0)
        throw std::runtime_error(fmt::format("cannot write {}: {}", conf_, std::strerror(errno)));
}

std::string backend::device() const { return fmt::format("/dev/drbd{}", res_.minor); }

boost::asio::awaitable<process_result> backend::run(action a) const {
    std::string line;
    for (auto& w : command(a, conf_, res_.name)) line += (line.empty() ? "" : " ") + w;
    log::info("drbd.command", "{}", line);
    co_return co_await run_command(line, {}, std::chrono::minutes(2));
}

}  // namespace tandem::agent::drbd
