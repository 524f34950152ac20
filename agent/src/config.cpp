// agent: TOML configuration reading and validation; every error names file, line, key, value and what is allowed.
#include "tandem/agent/config.hpp"

#include "tandem/base/duration.hpp"
#include "tandem/agent/heartbeat_codec.hpp"
#include "tandem/agent/version.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace tandem::agent {

namespace {

constexpr std::size_t min_key_bytes = 32;
constexpr std::size_t max_key_bytes = 4096;

std::string join(const std::vector<std::string>& v, std::string_view sep) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? std::string(sep) : "") + v[i];
    return s;
}

std::string repr(const toml::node& n) {
    std::ostringstream os;
    n.visit([&](auto&& v) {
        if constexpr (toml::is_string<decltype(v)>) os << '"' << v.get() << '"';
        else if constexpr (toml::is_number<decltype(v)> || toml::is_boolean<decltype(v)>) os << v;
        else if constexpr (toml::is_array<decltype(v)>) os << "[...]";
        else os << "{...}";
    });
    return os.str();
}

// Collects problems with their source positions while a file is read.
class reader {
public:
    explicit reader(std::string path) : path_(std::move(path)) {}

    void problem(const toml::node* n, std::string_view key, std::string_view what) {
        std::string where = path_;
        if (n && n->source().begin.line) where += fmt::format(":{}", n->source().begin.line);
        if (n && !n->is_table())
            problems_.push_back(fmt::format("{}: {} = {}: {}", where, key, repr(*n), what));
        else
            problems_.push_back(fmt::format("{}: {}: {}", where, key, what));
    }
    void problem_at(std::string_view key, std::string_view what) {
        problems_.push_back(fmt::format("{}: {}: {}", path_, key, what));
    }
    [[nodiscard]] const std::vector<std::string>& problems() const { return problems_; }

    // A section with a fixed set of keys; unknown keys are errors (a typo must
    // not silently fall back to a default on a production cluster).
    const toml::table* section(const toml::table& root, std::string_view name, bool required,
                               std::initializer_list<std::string_view> keys) {
        const toml::node* n = root.get(name);
        if (!n) {
            if (required) problem_at(fmt::format("[{}]", name), "missing section");
            return nullptr;
        }
        const toml::table* t = n->as_table();
        if (!t) {
            problem(n, name, "must be a table, e.g. [" + std::string(name) + "]");
            return nullptr;
        }
        for (auto&& [k, v] : *t) {
            if (std::find(keys.begin(), keys.end(), k.str()) == keys.end()) {
                std::vector<std::string> allowed(keys.begin(), keys.end());
                problem(&v, fmt::format("{}.{}", name, k.str()), "unknown key; allowed: " + join(allowed, ", "));
            }
        }
        return t;
    }

    std::optional<std::string> string(const toml::table* t, std::string_view sec, std::string_view key,
                                      bool required) {
        if (!t) return std::nullopt;
        const toml::node* n = t->get(key);
        auto full = fmt::format("{}.{}", sec, key);
        if (!n) {
            if (required) problem_at(full, "missing (required)");
            return std::nullopt;
        }
        if (auto s = n->value<std::string>()) return *s;
        problem(n, full, "must be a string");
        return std::nullopt;
    }

    std::optional<std::int64_t> integer(const toml::table* t, std::string_view sec, std::string_view key,
                                        std::int64_t lo, std::int64_t hi, std::string_view unit = "") {
        if (!t) return std::nullopt;
        const toml::node* n = t->get(key);
        if (!n) return std::nullopt;
        auto full = fmt::format("{}.{}", sec, key);
        auto v = n->value_exact<std::int64_t>();
        if (!v || *v < lo || *v > hi) {
            problem(n, full, fmt::format("must be an integer from {} to {}{}", lo, hi, unit));
            return std::nullopt;
        }
        return *v;
    }

    std::optional<std::chrono::milliseconds> duration(const toml::table* t, std::string_view sec,
                                                      std::string_view key, std::chrono::milliseconds lo,
                                                      std::chrono::milliseconds hi) {
        if (!t) return std::nullopt;
        const toml::node* n = t->get(key);
        if (!n) return std::nullopt;
        auto full = fmt::format("{}.{}", sec, key);
        auto allowed = fmt::format("must be a duration such as \"50ms\", \"10s\" or \"2min\", from {} to {}",
                                   format_duration(lo), format_duration(hi));
        auto s = n->value<std::string>();
        if (!s) {
            problem(n, full, allowed);
            return std::nullopt;
        }
        auto d = parse_duration(*s);
        if (!d || *d < lo || *d > hi) {
            problem(n, full, allowed);
            return std::nullopt;
        }
        return *d;
    }

    std::vector<std::pair<std::string, const toml::node*>> strings(const toml::table* t, std::string_view sec,
                                                                   std::string_view key) {
        std::vector<std::pair<std::string, const toml::node*>> out;
        if (!t) return out;
        const toml::node* n = t->get(key);
        if (!n) return out;
        auto full = fmt::format("{}.{}", sec, key);
        const toml::array* a = n->as_array();
        if (!a) {
            problem(n, full, "must be a list of strings, e.g. [\"a\", \"b\"]");
            return out;
        }
        for (auto&& e : *a) {
            if (auto s = e.value<std::string>()) out.emplace_back(*s, &e);
            else problem(&e, full, "every element must be a string");
        }
        return out;
    }

    template <class E>
    std::optional<E> choice(const toml::table* t, std::string_view sec, std::string_view key,
                            std::initializer_list<std::pair<std::string_view, E>> options) {
        auto s = string(t, sec, key, false);
        if (!s) return std::nullopt;
        for (auto& [name, e] : options)
            if (*s == name) return e;
        std::vector<std::string> names;
        for (auto& [name, e] : options) names.emplace_back(name);
        problem(t->get(key), fmt::format("{}.{}", sec, key), "must be one of: " + join(names, ", "));
        return std::nullopt;
    }

private:
    std::string path_;
    std::vector<std::string> problems_;
};

std::optional<ip_address> parse_ip(std::string_view text, bool with_prefix) {
    auto r = with_prefix ? netlink::parse_vip(text) : netlink::parse_ip(text);
    if (!r || (!with_prefix && text.find('/') != std::string_view::npos)) return std::nullopt;
    return *r;
}

bool valid_ifname(std::string_view s) {
    // The kernel's dev_valid_name(): 1..IFNAMSIZ-1 bytes, no '/', ':' or whitespace, not "." or "..".
    if (s.empty() || s.size() >= IFNAMSIZ || s == "." || s == "..") return false;
    return std::none_of(s.begin(), s.end(), [](char c) { return c == '/' || c == ':' || std::isspace(c); });
}

// Names travel in the heartbeat's fixed fields: longer ones would be cut there,
// and the peer would drop every heartbeat as coming from a stranger.
bool valid_name(std::string_view s, std::size_t max = name_field) {
    return !s.empty() && s.size() <= max &&
           std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; });
}

void read_key(reader& r, config& c, const toml::table* auth) {
    const toml::node* n = auth ? auth->get("key_file") : nullptr;
    const std::string& path = c.auth.key_file;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        r.problem(n, "auth.key_file", fmt::format("cannot open: {}", std::strerror(errno)));
        return;
    }
    struct stat st {};
    ::fstat(fd, &st);
    if (!S_ISREG(st.st_mode)) {
        r.problem(n, "auth.key_file", "must be a regular file");
    } else if ((st.st_mode & 077) != 0) {
        r.problem(n, "auth.key_file",
                  fmt::format("mode is {:04o}; the shared secret must be readable by its owner only (chmod 0600)",
                              st.st_mode & 07777));
    } else if (st.st_size < static_cast<off_t>(min_key_bytes) || st.st_size > static_cast<off_t>(max_key_bytes)) {
        r.problem(n, "auth.key_file",
                  fmt::format("is {} bytes; the shared secret must be {} to {} bytes "
                              "(e.g. head -c 64 /dev/urandom > FILE)",
                              st.st_size, min_key_bytes, max_key_bytes));
    } else {
        c.auth.key.resize(static_cast<std::size_t>(st.st_size));
        if (::read(fd, c.auth.key.data(), c.auth.key.size()) != st.st_size) {
            r.problem(n, "auth.key_file", "short read");
            c.auth.key.clear();
        }
    }
    ::close(fd);
}

config validate(const toml::table& root, const std::string& path) {
    reader r(path);
    config c;
    c.path = path;
    for (auto&& [k, v] : root) {
        static const std::set<std::string_view> sections = {"cluster",      "node", "peer",    "heartbeat",
                                                             "connectivity", "auth", "replication", "crossover",
                                                             "control",      "health", "services", "announce",
                                                             "store",        "watchdog"};
        if (!sections.count(k.str()))
            r.problem(&v, k.str(), "unknown section; allowed: " +
                                       join({"cluster", "node", "peer", "heartbeat", "connectivity", "auth",
                                             "replication", "crossover", "control", "health", "services", "announce", "store",
                                             "watchdog"},
                                            ", "));
    }

    auto ip_field = [&](const toml::table* t, std::string_view sec, std::string_view key, bool required,
                        bool prefix) -> std::optional<ip_address> {
        auto s = r.string(t, sec, key, required);
        if (!s) return std::nullopt;
        auto a = parse_ip(*s, prefix);
        if (!a)
            r.problem(t->get(key), fmt::format("{}.{}", sec, key),
                      prefix ? "must be an IPv4 or IPv6 address with a prefix length, e.g. \"10.77.0.100/24\" "
                               "(1..32 for IPv4, 1..128 for IPv6)"
                             : "must be an IPv4 or IPv6 address without a prefix, e.g. \"10.77.0.1\"");
        return a;
    };
    auto read_name = [&](const toml::table* t, std::string_view sec, std::string_view key) {
        auto s = r.string(t, sec, key, true);
        if (s && !valid_name(*s))
            r.problem(t->get(key), fmt::format("{}.{}", sec, key),
                      fmt::format("must be 1 to {} characters of letters, digits, '-', '_' or '.' (it is sent "
                                  "in every heartbeat)",
                                  name_field));
        return s.value_or("");
    };
    auto ifname_field = [&](const toml::table* t, std::string_view sec, std::string_view key, bool required,
                            std::size_t max_len) -> std::string {
        auto s = r.string(t, sec, key, required);
        if (!s) return "";
        if (!valid_ifname(*s) || s->size() > max_len)
            r.problem(t->get(key), fmt::format("{}.{}", sec, key),
                      fmt::format("must be a network interface name of 1 to {} characters without '/', ':' or "
                                  "spaces",
                                  max_len));
        return *s;
    };

    auto* cl = r.section(root, "cluster", true, {"name", "vip", "interface"});
    c.cluster.name = read_name(cl, "cluster", "name");
    if (auto v = ip_field(cl, "cluster", "vip", true, true)) c.cluster.vip = *v;
    // The alias "<ifname>:0" is an IFA_LABEL, at most IFNAMSIZ-1 = 15 characters.
    c.cluster.interface = ifname_field(cl, "cluster", "interface", true, IFNAMSIZ - 1 - 2);

    auto* nd = r.section(root, "node", true, {"name", "role", "address", "software_version", "state_dir"});
    c.node.name = read_name(nd, "node", "name");
    if (auto role = r.choice<node_role>(nd, "node", "role",
                                        {{"primary", node_role::primary}, {"secondary", node_role::secondary}}))
        c.node.role = *role;
    else if (nd && !nd->get("role"))
        r.problem_at("node.role", "missing (required): primary or secondary");
    if (auto v = ip_field(nd, "node", "address", true, false)) c.node.address = *v;
    c.node.software_version = r.string(nd, "node", "software_version", false).value_or(tandem_version);
    if (!valid_name(c.node.software_version, version_field))
        r.problem(nd ? nd->get("software_version") : nullptr, "node.software_version",
                  fmt::format("must be 1 to {} characters of letters, digits, '-', '_' or '.'", version_field));

    if (auto s = r.string(nd, "node", "state_dir", false)) {
        if (s->empty() || (*s)[0] != '/') r.problem(nd->get("state_dir"), "node.state_dir", "must be an absolute path");
        else c.node.state_dir = *s;
    }

    auto* pe = r.section(root, "peer", true, {"name", "address"});
    c.peer.name = read_name(pe, "peer", "name");
    if (auto v = ip_field(pe, "peer", "address", true, false)) c.peer.address = *v;

    auto* hb = r.section(root, "heartbeat", false, {"interval", "timeout", "port", "links", "probe", "latency_alert"});
    using std::chrono::milliseconds;
    if (auto d = r.duration(hb, "heartbeat", "interval", milliseconds(10), milliseconds(600'000)))
        c.heartbeat.interval = *d;
    if (auto d = r.duration(hb, "heartbeat", "timeout", milliseconds(30), milliseconds(3'600'000)))
        c.heartbeat.timeout = *d;
    if (c.heartbeat.timeout <= 2 * c.heartbeat.interval) {
        const toml::node* n = hb ? hb->get("timeout") : nullptr;
        r.problem(n, "heartbeat.timeout",
                  fmt::format("must exceed 2 x heartbeat.interval (2 x {} = {}), so that one lost heartbeat "
                              "never causes a failover",
                              format_duration(c.heartbeat.interval), format_duration(2 * c.heartbeat.interval)));
    }
    if (auto p = r.integer(hb, "heartbeat", "port", 1, 65535)) c.heartbeat.port = static_cast<std::uint16_t>(*p);
    for (auto& [link, n] : r.strings(hb, "heartbeat", "links")) {
        if (!valid_ifname(link))
            r.problem(n, "heartbeat.links", "every element must be a network interface name");
        else if (std::find(c.heartbeat.links.begin(), c.heartbeat.links.end(), link) != c.heartbeat.links.end())
            r.problem(n, "heartbeat.links", fmt::format("lists \"{}\" twice", link));
        else
            c.heartbeat.links.push_back(link);
    }
    if (c.heartbeat.links.empty() && !c.cluster.interface.empty()) c.heartbeat.links.push_back(c.cluster.interface);
    if (auto p = r.choice<latency_probe>(hb, "heartbeat", "probe",
                                         {{"bpf", latency_probe::bpf},
                                          {"timestamping", latency_probe::timestamping},
                                          {"both", latency_probe::both}}))
        c.heartbeat.probe = *p;
    if (auto d = r.duration(hb, "heartbeat", "latency_alert", milliseconds(1), milliseconds(60'000)))
        c.heartbeat.latency_alert = *d;

    auto* co = r.section(root, "connectivity", false, {"targets", "timeout", "interval", "require"});
    for (auto& [t, n] : r.strings(co, "connectivity", "targets")) {
        if (auto a = parse_ip(t, false)) c.connectivity.targets.push_back(*a);
        else r.problem(n, "connectivity.targets", "every element must be an IPv4 or IPv6 address");
    }
    if (auto d = r.duration(co, "connectivity", "timeout", milliseconds(10), milliseconds(60'000)))
        c.connectivity.timeout = *d;
    if (auto d = r.duration(co, "connectivity", "interval", milliseconds(100), milliseconds(3'600'000)))
        c.connectivity.interval = *d;
    if (auto q = r.choice<connectivity_rule>(co, "connectivity", "require",
                                             {{"any", connectivity_rule::any}, {"all", connectivity_rule::all}}))
        c.connectivity.require = *q;

    auto* au = r.section(root, "auth", true, {"key_file"});
    if (auto k = r.string(au, "auth", "key_file", true)) {
        c.auth.key_file = *k;
        read_key(r, c, au);
    }

    auto* re = r.section(root, "replication", false,
                         {"backend", "port", "rate", "resync_yield_rate", "device", "metadata", "protocol", "lease_device"});
    if (auto b = r.choice<backend_kind>(re, "replication", "backend",
                                        {{"none", backend_kind::none},
                                         {"uring", backend_kind::uring},
                                         {"drbd", backend_kind::drbd},
                                         {"shared", backend_kind::shared}}))
        c.replication.backend = *b;
    if (auto p = r.integer(re, "replication", "port", 1, 65535)) c.replication.port = static_cast<std::uint16_t>(*p);
    // The seeds' disk synchronization rate: default 100 MB/s, DRBD's ceiling 4096 MB/s.
    if (auto v = r.integer(re, "replication", "rate", 1, 4096, " MB/s (MiB/s)"))
        c.replication.rate_mib = static_cast<std::uint32_t>(*v);
    // The resync yields to application writes (DRBD's c-min-rate); 0: it never does.
    if (auto v = r.integer(re, "replication", "resync_yield_rate", 0, 4096, " MB/s (MiB/s; 0: the resync never yields)"))
        c.replication.yield_rate_mib = static_cast<std::uint32_t>(*v);
    c.replication.device = r.string(re, "replication", "device", false).value_or("");
    if (auto m = r.string(re, "replication", "metadata", false)) {
        if (m->empty() || (*m)[0] != '/') r.problem(re->get("metadata"), "replication.metadata", "must be an absolute path");
        else c.replication.metadata = *m;
    }
    if (c.replication.metadata.empty()) c.replication.metadata = c.node.state_dir + "/replication.meta";
    // DRBD's names: C completes a write when both disks have it, A when the local one has.
    if (auto pr = r.choice<bool>(re, "replication", "protocol", {{"C", false}, {"A", true}}))
        c.replication.protocol_a = *pr;
    if ((c.replication.backend == backend_kind::uring || c.replication.backend == backend_kind::drbd ||
         c.replication.backend == backend_kind::shared) &&
        c.replication.device.empty())
        r.problem_at("replication.device",
                     fmt::format("missing: backend \"{}\" needs the device holding /store",
                                 to_string(c.replication.backend)));
    if (c.heartbeat.port == c.replication.port)
        r.problem_at("replication.port", "must differ from heartbeat.port");
    if (auto l = r.string(re, "replication", "lease_device", false); l && !l->empty()) {
        if ((*l)[0] != '/')
            r.problem(re->get("lease_device"), "replication.lease_device", "must be an absolute path");
        else if (c.replication.backend != backend_kind::shared)
            r.problem(re->get("lease_device"), "replication.lease_device",
                      "only with backend \"shared\": \"uring\" and \"drbd\" fence through their own replication "
                      "link");
        else if (*l == c.replication.device)
            r.problem(re->get("lease_device"), "replication.lease_device",
                      "must not be replication.device: the lease's slots would overwrite the file system");
        else
            c.replication.lease_device = *l;
    }

    auto* xo = r.section(root, "crossover", false, {"interface", "address", "peer_address"});
    if (xo) {
        c.crossover.interface = ifname_field(xo, "crossover", "interface", true, IFNAMSIZ - 1);
        c.crossover.address = ip_field(xo, "crossover", "address", true, false);
        c.crossover.peer_address = ip_field(xo, "crossover", "peer_address", true, false);
        if (c.crossover.address && c.crossover.peer_address &&
            c.crossover.address->family != c.crossover.peer_address->family)
            r.problem(xo->get("peer_address"), "crossover.peer_address",
                      "must be of the same IP family as crossover.address");
        if (c.crossover.interface == c.cluster.interface)
            r.problem(xo->get("interface"), "crossover.interface",
                      "must not be the management interface (the seeds: crossover cables connect other ports)");
    }
    for (auto& link : c.heartbeat.links) {
        if (link != c.cluster.interface && link != c.crossover.interface)
            r.problem(hb ? hb->get("links") : nullptr, "heartbeat.links",
                      fmt::format("\"{}\" is neither cluster.interface (\"{}\") nor crossover.interface; Tandem "
                                  "knows the peer's address only on those",
                                  link, c.cluster.interface));
    }

    auto* ct = r.section(root, "control", false, {"socket"});
    if (auto s = r.string(ct, "control", "socket", false)) {
        if (s->empty() || (*s)[0] != '/' || s->size() >= 108)
            r.problem(ct->get("socket"), "control.socket", "must be an absolute path shorter than 108 bytes");
        else
            c.control.socket = *s;
    }

    auto* he = r.section(root, "health", false, {"store_path", "check_command", "interval", "command_timeout"});
    c.health.store_path = r.string(he, "health", "store_path", false).value_or("");
    c.health.check_command = r.string(he, "health", "check_command", false).value_or("");
    if (auto d = r.duration(he, "health", "interval", milliseconds(100), milliseconds(3'600'000)))
        c.health.interval = *d;
    if (auto d = r.duration(he, "health", "command_timeout", milliseconds(100), milliseconds(600'000)))
        c.health.command_timeout = *d;

    auto* an = r.section(root, "announce", false, {"count", "spacing", "refresh"});
    if (auto v = r.integer(an, "announce", "count", 1, 20)) c.announce.count = static_cast<int>(*v);
    if (auto d = r.duration(an, "announce", "spacing", milliseconds(100), milliseconds(60'000)))
        c.announce.spacing = *d;
    if (an && an->get("refresh")) {
        auto s = an->get("refresh")->value<std::string>();
        auto d = s ? parse_duration(*s) : std::nullopt;
        if (!d || (d->count() != 0 && *d < milliseconds(1000)))
            r.problem(an->get("refresh"), "announce.refresh",
                      "must be \"0s\" (off) or a duration of at least 1s, such as \"60s\"");
        else
            c.announce.refresh = *d;
    }

    auto* st = r.section(root, "store", false, {"mount", "fstype", "options", "frontend", "fsck", "fsck_repair", "threads",
                                            "kill_after"});
    if (auto m = r.string(st, "store", "mount", false)) {
        if (!m->empty() && ((*m)[0] != '/' || *m == "/"))
            r.problem(st->get("mount"), "store.mount", "must be an absolute path other than \"/\" (or \"\" for no mount)");
        else
            c.store.mount = *m;
    }
    if (auto f = r.choice<std::string>(st, "store", "fstype",
                                       {{"ext4", "ext4"}, {"ext3", "ext3"}, {"ext2", "ext2"}, {"xfs", "xfs"}}))
        c.store.fstype = *f;
    c.store.options = r.string(st, "store", "options", false).value_or("");
    if (auto f = r.choice<std::string>(st, "store", "frontend", {{"auto", "auto"}, {"fuse", "fuse"}, {"nbd", "nbd"}}))
        c.store.frontend = *f;
    if (st && st->get("fsck")) {
        if (auto b = st->get("fsck")->value<bool>()) c.store.fsck = *b;
        else r.problem(st->get("fsck"), "store.fsck", "must be true or false");
    }
    if (auto f = r.choice<std::string>(st, "store", "fsck_repair", {{"preen", "preen"}, {"yes", "yes"}, {"no", "no"}})) {
        if (*f != "preen" && c.store.fstype == "xfs")
            r.problem(st->get("fsck_repair"), "store.fsck_repair",
                      "must be \"preen\" with fstype \"xfs\" (fsck.xfs checks nothing; repair xfs with xfs_repair by hand)");
        else
            c.store.fsck_repair = *f;
    }
    if (auto v = r.integer(st, "store", "threads", 1, 64)) c.store.threads = static_cast<unsigned>(*v);
    if (auto d = r.duration(st, "store", "kill_after", milliseconds(0), milliseconds(600'000))) c.store.kill_after = *d;
    if (c.replication.backend == backend_kind::shared && c.store.mount.empty())
        r.problem_at("store.mount", "missing: backend \"shared\" mounts the shared device there on the active node");

    auto* sv = r.section(root, "services", false, {"start", "stop", "timeout"});
    c.services.start = r.string(sv, "services", "start", false).value_or("");
    c.services.stop = r.string(sv, "services", "stop", false).value_or("");
    if (auto d = r.duration(sv, "services", "timeout", milliseconds(100), milliseconds(3'600'000)))
        c.services.timeout = *d;

    auto* wd = r.section(root, "watchdog", false, {"device", "timeout"});
    if (auto d = r.string(wd, "watchdog", "device", false); d && !d->empty()) {
        if ((*d)[0] != '/') r.problem(wd->get("device"), "watchdog.device", "must be an absolute path, such as \"/dev/watchdog\"");
        else c.watchdog.device = *d;
    }
    {
        using std::chrono::seconds;
        // The kernel's watchdog API counts in seconds.
        auto ceil_s = std::chrono::ceil<seconds>(c.heartbeat.timeout);
        c.watchdog.timeout = std::max(ceil_s, seconds(1));
        if (auto d = r.duration(wd, "watchdog", "timeout", milliseconds(1000), milliseconds(3'600'000))) {
            if (d->count() % 1000 != 0)
                r.problem(wd->get("timeout"), "watchdog.timeout",
                          "must be whole seconds, such as \"10s\" (the kernel's watchdog API counts in seconds)");
            else
                c.watchdog.timeout = std::chrono::duration_cast<seconds>(*d);
        }
        // With the lease, the host must be reset before the peer claims the shared
        // device: lease_expiry() after the last renewal it saw, and a renewal may be
        // up to two intervals old when the feeding stops (docs/hw-watchdog.md).
        auto limit = 2 * c.heartbeat.timeout - 2 * c.heartbeat.interval;
        if (!c.watchdog.device.empty() && !c.replication.lease_device.empty() && c.watchdog.timeout > limit)
            r.problem(wd ? wd->get("timeout") : nullptr, "watchdog.timeout",
                      fmt::format("{} is too long for the shared-storage lease: the peer claims the device 2 x "
                                  "heartbeat.timeout after this node's last renewal, so the watchdog must fire "
                                  "within 2 x heartbeat.timeout - 2 x heartbeat.interval = {}; {}",
                                  format_duration(c.watchdog.timeout), format_duration(limit),
                                  limit >= seconds(1)
                                      ? fmt::format("set it to at most {}s", std::chrono::floor<seconds>(limit).count())
                                      : std::string("no whole number of seconds fits: lengthen heartbeat.timeout")));
    }

    // The seeds' pairing rules ("IP Addressing and Subnets"): node, peer and VIP in one subnet.
    if (c.cluster.vip.family && c.node.address.family && c.peer.address.family) {
        if (c.node.address.family != c.peer.address.family)
            r.problem_at("peer.address", fmt::format("\"{}\" is not of the same IP family as node.address \"{}\"",
                                                     netlink::address_string(c.peer.address),
                                                     netlink::address_string(c.node.address)));
        else if (netlink::same_address(c.node.address, c.peer.address))
            r.problem_at("peer.address", "must differ from node.address");
        if (c.cluster.vip.family == c.node.address.family) {
            for (auto* a : {&c.node.address, &c.peer.address})
                if (!netlink::same_subnet(c.cluster.vip, *a, c.cluster.vip.prefix))
                    r.problem_at(a == &c.node.address ? "node.address" : "peer.address",
                                 fmt::format("\"{}\" is not in the VIP's subnet {}; the seeds require the "
                                             "nodes and the cluster VIP in one subnet",
                                             netlink::address_string(*a), netlink::to_string(c.cluster.vip)));
        }
        if (netlink::same_address(c.cluster.vip, c.node.address) || netlink::same_address(c.cluster.vip, c.peer.address))
            r.problem_at("cluster.vip", "must be an unused address, not a node's own address");
    }
    if (!c.node.name.empty() && c.node.name == c.peer.name)
        r.problem_at("peer.name", "must differ from node.name");

    if (!r.problems().empty()) throw config_error(r.problems());
    return c;
}

}  // namespace

const ip_address& config::peer_address_on(const std::string& link) const {
    if (link == crossover.interface && crossover.peer_address) return *crossover.peer_address;
    return peer.address;
}

config_error::config_error(const std::vector<std::string>& p) : std::runtime_error(join(p, "\n")), problems(p) {}

config parse_config(std::string_view text, const std::string& path) {
    toml::table root;
    try {
        root = toml::parse(text, path);
    } catch (const toml::parse_error& e) {
        throw config_error({fmt::format("{}:{}:{}: not valid TOML: {}", path, e.source().begin.line,
                                        e.source().begin.column, e.description())});
    }
    return validate(root, path);
}

config load_config(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw config_error({fmt::format("{}: cannot read the configuration: {}", path, std::strerror(errno))});
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_config(ss.str(), path);
}

reload_plan plan_reload(const config& a, const config& b) {
    reload_plan p;
    auto applied = [&](std::string_view key, std::string from, std::string to) {
        if (from != to) p.applied.push_back(fmt::format("{}: {} -> {}", key, from, to));
    };
    auto refused = [&](std::string_view key, bool changed) {
        if (changed)
            p.refused.push_back(fmt::format("{}: changing it needs a re-pairing of the cluster (stop both nodes, "
                                            "change both configurations, start them again)",
                                            key));
    };
    refused("cluster.name", a.cluster.name != b.cluster.name);
    refused("cluster.vip", a.cluster.vip != b.cluster.vip);
    refused("cluster.interface", a.cluster.interface != b.cluster.interface);
    refused("node.name", a.node.name != b.node.name);
    refused("node.role", a.node.role != b.node.role);
    refused("node.address", a.node.address != b.node.address);
    refused("peer.name", a.peer.name != b.peer.name);
    refused("peer.address", a.peer.address != b.peer.address);
    refused("heartbeat.port", a.heartbeat.port != b.heartbeat.port);
    refused("heartbeat.links", a.heartbeat.links != b.heartbeat.links);
    refused("auth.key_file", a.auth.key != b.auth.key);
    refused("replication.backend", a.replication.backend != b.replication.backend);
    refused("replication.port", a.replication.port != b.replication.port);
    refused("replication.device", a.replication.device != b.replication.device);
    refused("replication.metadata", a.replication.metadata != b.replication.metadata);
    refused("replication.protocol", a.replication.protocol_a != b.replication.protocol_a);
    refused("replication.lease_device", a.replication.lease_device != b.replication.lease_device);
    refused("crossover.interface", a.crossover.interface != b.crossover.interface);
    refused("crossover.address", a.crossover.address != b.crossover.address);
    refused("crossover.peer_address", a.crossover.peer_address != b.crossover.peer_address);
    refused("control.socket", a.control.socket != b.control.socket);
    if (a.watchdog.device != b.watchdog.device)
        p.refused.push_back("watchdog.device: opened once at start-up; restart tandemd to use another one");
    for (auto [key, changed] : {std::pair{"store.mount", a.store.mount != b.store.mount},
                                {"store.fstype", a.store.fstype != b.store.fstype},
                                {"store.options", a.store.options != b.store.options},
                                {"store.frontend", a.store.frontend != b.store.frontend},
                                {"store.threads", a.store.threads != b.store.threads}})
        if (changed)
            p.refused.push_back(fmt::format("{}: read when /store is mounted; restart tandemd while it is the standby "
                                            "to use the new value", key));
    applied("store.fsck", a.store.fsck ? "true" : "false", b.store.fsck ? "true" : "false");
    applied("store.fsck_repair", a.store.fsck_repair, b.store.fsck_repair);
    applied("store.kill_after", format_duration(a.store.kill_after), format_duration(b.store.kill_after));
    if (a.heartbeat.probe != b.heartbeat.probe)
        p.refused.push_back("heartbeat.probe: chosen when each link's probe starts; restart tandemd to use another");
    if (a.node.state_dir != b.node.state_dir)
        p.refused.push_back("node.state_dir: read once at start-up; restart tandemd to use another one");
    if (a.node.software_version != b.node.software_version)
        p.refused.push_back("node.software_version: the version is what the peer checks before pairing; restart "
                            "tandemd to advertise another one");

    applied("heartbeat.interval", format_duration(a.heartbeat.interval), format_duration(b.heartbeat.interval));
    applied("heartbeat.timeout", format_duration(a.heartbeat.timeout), format_duration(b.heartbeat.timeout));
    applied("heartbeat.latency_alert", format_duration(a.heartbeat.latency_alert),
            format_duration(b.heartbeat.latency_alert));
    auto targets = [](const config& c) {
        std::vector<std::string> v;
        for (auto& t : c.connectivity.targets) v.push_back(netlink::address_string(t));
        return "[" + join(v, ", ") + "]";
    };
    applied("connectivity.targets", targets(a), targets(b));
    applied("connectivity.timeout", format_duration(a.connectivity.timeout), format_duration(b.connectivity.timeout));
    applied("connectivity.interval", format_duration(a.connectivity.interval),
            format_duration(b.connectivity.interval));
    applied("connectivity.require", a.connectivity.require == connectivity_rule::any ? "any" : "all",
            b.connectivity.require == connectivity_rule::any ? "any" : "all");
    applied("replication.rate", std::to_string(a.replication.rate_mib), std::to_string(b.replication.rate_mib));
    applied("replication.resync_yield_rate", std::to_string(a.replication.yield_rate_mib),
            std::to_string(b.replication.yield_rate_mib));
    applied("health.store_path", a.health.store_path, b.health.store_path);
    applied("health.check_command", a.health.check_command, b.health.check_command);
    applied("health.interval", format_duration(a.health.interval), format_duration(b.health.interval));
    applied("health.command_timeout", format_duration(a.health.command_timeout),
            format_duration(b.health.command_timeout));
    applied("announce.count", std::to_string(a.announce.count), std::to_string(b.announce.count));
    applied("announce.spacing", format_duration(a.announce.spacing), format_duration(b.announce.spacing));
    applied("announce.refresh", format_duration(a.announce.refresh), format_duration(b.announce.refresh));
    applied("services.start", a.services.start, b.services.start);
    applied("services.stop", a.services.stop, b.services.stop);
    applied("services.timeout", format_duration(a.services.timeout), format_duration(b.services.timeout));
    applied("watchdog.timeout", format_duration(a.watchdog.timeout), format_duration(b.watchdog.timeout));
    return p;
}

const char* to_string(node_role r) noexcept { return r == node_role::primary ? "primary" : "secondary"; }

const char* to_string(backend_kind b) noexcept {
    switch (b) {
        case backend_kind::none: return "none";
        case backend_kind::uring: return "uring";
        case backend_kind::drbd: return "drbd";
        case backend_kind::shared: return "shared";
    }
    return "?";
}

}  // namespace tandem::agent
