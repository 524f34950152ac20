// replication: the NBD front end — nbd.ko configured through generic netlink, served over socket pairs.
#include "tandem/base/log.hpp"
#include "tandem/replication/error.hpp"
#include "tandem/replication/frontend.hpp"
#include "tandem/replication/nbd.hpp"

#include <endian.h>
#include <linux/nbd-netlink.h>
#include <linux/nbd.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace tandem::replication {

namespace {

constexpr std::size_t request_size = 28;  // magic, flags+type, handle, offset, length
constexpr std::uint32_t max_request = 32u << 20;  // the kernel splits at max_sectors; refuse anything wild

bool read_all(int fd, void* p, std::size_t n) {
    auto* b = static_cast<char*>(p);
    while (n) {
        auto r = ::read(fd, b, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        b += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

bool write_all(int fd, iovec* iov, int cnt) {
    while (cnt) {
        auto r = ::writev(fd, iov, cnt);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        auto left = static_cast<std::size_t>(r);
        while (cnt && left >= iov->iov_len) {
            left -= iov->iov_len;
            ++iov;
            --cnt;
        }
        if (cnt) {
            iov->iov_base = static_cast<char*>(iov->iov_base) + left;
            iov->iov_len -= left;
        }
    }
    return true;
}

std::uint32_t errno_of(const error_code& ec) {
    if (ec == make_error_code(errc::role_conflict)) return EROFS;
    if (ec == make_error_code(errc::misaligned)) return EINVAL;
    if (ec == make_error_code(errc::out_of_range)) return ENOSPC;
    if (ec == make_error_code(std::errc::operation_not_supported)) return EOPNOTSUPP;
    return EIO;
}

template <class T>
T load_be(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    if constexpr (sizeof(T) == 2) return be16toh(v);
    else if constexpr (sizeof(T) == 4) return be32toh(v);
    else return be64toh(v);
}

}  // namespace

std::uint64_t nbd_serve(engine& e, int fd) {
    struct freer {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::unique_ptr<std::byte, freer> buf(static_cast<std::byte*>(std::aligned_alloc(4096, max_request)));
    std::uint64_t served = 0;
    for (;;) {
        unsigned char h[request_size];
        if (!read_all(fd, h, sizeof h)) return served;
        if (load_be<std::uint32_t>(h) != NBD_REQUEST_MAGIC) {
            log::error("nbd.bad_request", "request magic {:#x}: ending the connection", load_be<std::uint32_t>(h));
            return served;
        }
        auto type_flags = load_be<std::uint32_t>(h + 4);
        auto type = type_flags & 0xffff;
        bool fua = type_flags & NBD_CMD_FLAG_FUA;
        auto off = load_be<std::uint64_t>(h + 16);
        auto len = load_be<std::uint32_t>(h + 24);
        if (type == NBD_CMD_DISC) return served;
        ++served;
        error_code ec;
        std::size_t data_out = 0;
        if ((type == NBD_CMD_READ || type == NBD_CMD_WRITE) && len > max_request) {
            // The payload of an oversized write cannot be skipped safely: end the connection.
            log::error("nbd.bad_request", "{} bytes in one request (at most {}): ending the connection", len, max_request);
            return served;
        }
        switch (type) {
            case NBD_CMD_READ:
                if (auto r = e.read(off, {buf.get(), len}); !r) ec = r.error();
                else data_out = len;
                break;
            case NBD_CMD_WRITE:
                if (!read_all(fd, buf.get(), len)) return served;
                if (auto r = e.write(off, {buf.get(), len}, fua ? std::uint32_t{data_fua} : 0u); !r) ec = r.error();
                break;
            case NBD_CMD_FLUSH:
                if (auto r = e.flush(); !r) ec = r.error();
                break;
            case NBD_CMD_TRIM:  // the blocks then read as zeros, on both nodes
                if (auto r = e.zero(off, len); !r) ec = r.error();
                break;
            default:
                ec = make_error_code(errc::unknown_type);
                break;
        }
        unsigned char reply[16];
        std::uint32_t magic = htobe32(NBD_REPLY_MAGIC);
        std::uint32_t err = htobe32(ec ? (ec == make_error_code(errc::unknown_type) ? EINVAL : errno_of(ec)) : 0);
        std::memcpy(reply, &magic, 4);
        std::memcpy(reply + 4, &err, 4);
        std::memcpy(reply + 8, h + 8, 8);  // the handle, as the client sent it
        iovec iov[2] = {{reply, sizeof reply}, {buf.get(), data_out}};
        if (!write_all(fd, iov, data_out ? 2 : 1)) return served;
    }
}

namespace {

struct nl_sock_deleter {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct nl_msg_deleter {
    void operator()(nl_msg* m) const { nlmsg_free(m); }
};

// One generic-netlink request to the "nbd" family; the reply's NBD_ATTR_INDEX lands in *index.
result<void> nbd_request(std::uint8_t cmd, const std::function<bool(nl_msg*)>& fill, int* index, std::string& why_not) {
    std::unique_ptr<nl_sock, nl_sock_deleter> sock(nl_socket_alloc());
    if (!sock || genl_connect(sock.get()) != 0) {
        why_not = "cannot open a generic netlink socket";
        return errno_error(EIO);
    }
    int family = genl_ctrl_resolve(sock.get(), "nbd");
    if (family < 0) {
        why_not = "the kernel has no \"nbd\" generic netlink family (load nbd.ko, or use [store] frontend = \"fuse\")";
        return errno_error(ENOENT);
    }
    std::unique_ptr<nl_msg, nl_msg_deleter> msg(nlmsg_alloc());
    if (!msg || !genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, cmd, 0) || !fill(msg.get())) {
        why_not = "cannot build the nbd netlink request";
        return errno_error(ENOMEM);
    }
    if (index) {
        nl_socket_modify_cb(
            sock.get(), NL_CB_VALID, NL_CB_CUSTOM,
            [](nl_msg* m, void* arg) -> int {
                nlattr* attrs[NBD_ATTR_MAX + 1] = {};
                if (genlmsg_parse(nlmsg_hdr(m), 0, attrs, NBD_ATTR_MAX, nullptr) == 0 && attrs[NBD_ATTR_INDEX])
                    *static_cast<int*>(arg) = static_cast<int>(nla_get_u32(attrs[NBD_ATTR_INDEX]));
                return NL_OK;
            },
            index);
    }
    if (int rc = nl_send_sync(sock.get(), msg.release()); rc < 0) {
        why_not = fmt::format("nbd netlink command {}: {}", cmd, nl_geterror(rc));
        return errno_error(EIO);
    }
    return {};
}

class nbd_frontend final : public frontend {
public:
    nbd_frontend(engine& e, const frontend_config& cfg) : e_(e), cfg_(cfg) {}
    ~nbd_frontend() override { (void)close(); }
    std::string_view kind() const noexcept override { return "nbd"; }
    const std::string& device() const noexcept override { return dev_; }

    result<void> start(std::string& why_not) {
        if (!e_.primary()) {
            why_not = "this node is not primary: the standby never exposes the volume";
            return make_error_code(errc::role_conflict);
        }
        // One connection per worker: nbd.ko spreads requests over them (multi-conn).
        unsigned conns = std::max(1u, std::min(cfg_.threads, 8u));
        std::vector<int> kernel_ends;
        for (unsigned i = 0; i < conns; ++i) {
            int sv[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
                why_not = fmt::format("socketpair: {}", std::strerror(errno));
                return errno_error();
            }
            ours_.emplace_back(sv[0]);
            theirs_.emplace_back(sv[1]);
            kernel_ends.push_back(sv[1]);
        }
        int index = -1;
        auto size = e_.size();
        auto r = nbd_request(
            NBD_CMD_CONNECT,
            [&](nl_msg* m) {
                if (nla_put_u64(m, NBD_ATTR_SIZE_BYTES, size) || nla_put_u64(m, NBD_ATTR_BLOCK_SIZE_BYTES, 4096) ||
                    nla_put_u64(m, NBD_ATTR_SERVER_FLAGS,
                                NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
                                    NBD_FLAG_CAN_MULTI_CONN))
                    return false;
                auto* socks = nla_nest_start(m, NBD_ATTR_SOCKETS);
                if (!socks) return false;
                for (int fd : kernel_ends) {
                    auto* item = nla_nest_start(m, NBD_SOCK_ITEM);
                    if (!item || nla_put_u32(m, NBD_SOCK_FD, static_cast<std::uint32_t>(fd))) return false;
                    nla_nest_end(m, item);
                }
                nla_nest_end(m, socks);
                return true;
            },
            &index, why_not);
        if (!r) return r;
        if (index < 0) {
            why_not = "nbd.ko accepted the connection but named no device";
            return errno_error(EIO);
        }
        index_ = index;
        dev_ = fmt::format("/dev/nbd{}", index);
        theirs_.clear();  // the kernel holds its own references now
        for (auto& fd : ours_) workers_.emplace_back([this, f = fd.get()] { nbd_serve(e_, f); });
        log::notice("store.frontend", "volume {} exposed as {} ({} connections)", size, dev_, conns);
        return {};
    }

    // A disconnect fails the device's I/O whether or not it is still in use.
    result<void> cut() override { return close(); }
    result<void> close() override {
        result<void> out;
        if (index_ >= 0) {
            std::string why;
            auto idx = static_cast<std::uint32_t>(index_);
            if (auto r = nbd_request(NBD_CMD_DISCONNECT, [&](nl_msg* m) { return nla_put_u32(m, NBD_ATTR_INDEX, idx) == 0; },
                                     nullptr, why);
                !r) {
                log::warning("store.frontend", "disconnecting {}: {}", dev_, why);
                out = r;
            }
            index_ = -1;
        }
        // The kernel sends NBD_CMD_DISC on each connection; shutting ours down covers a kernel that did not.
        for (auto& fd : ours_) ::shutdown(fd.get(), SHUT_RDWR);
        for (auto& w : workers_) w.join();
        workers_.clear();
        ours_.clear();
        theirs_.clear();
        return out;
    }

private:
    engine& e_;
    frontend_config cfg_;
    std::vector<unique_fd> ours_, theirs_;
    std::vector<std::thread> workers_;
    int index_ = -1;
    std::string dev_;
};

}  // namespace

result<std::unique_ptr<frontend>> expose_nbd(engine& e, const frontend_config& cfg, std::string& why_not) {
    auto f = std::make_unique<nbd_frontend>(e, cfg);
    if (auto r = f->start(why_not); !r) return r.error();
    return std::unique_ptr<frontend>(std::move(f));
}

}  // namespace tandem::replication
