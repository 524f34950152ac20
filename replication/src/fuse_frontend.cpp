// replication: the FUSE front end — one file, "volume", whose I/O is the engine's; a loop device over it.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "tandem/base/log.hpp"
#include "tandem/replication/error.hpp"
#include "tandem/replication/frontend.hpp"
#include "tandem/replication/loop_device.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem::replication {

namespace {

constexpr fuse_ino_t volume_ino = 2;
constexpr const char* volume_name = "volume";
constexpr std::uint32_t max_request = 1u << 20;  // the kernel's limit: 256 pages
constexpr double forever = 86400.0;             // attributes never change while mounted
// A write request is a fuse_in_header and a fuse_write_in (40 bytes each since
// protocol 7.9) followed by the data.
constexpr std::size_t write_args = 80;
// libfuse reads at most max_write plus one page of headers (its FUSE_BUFFER_HEADER_SIZE).
constexpr std::size_t request_buffer = max_request + 4096;

// Ends a FUSE connection by force through fusectl (mounted here if it is not).
void abort_connection(unsigned minor_no) {
    auto ctl = fmt::format("/sys/fs/fuse/connections/{}/abort", minor_no);
    if (::access(ctl.c_str(), W_OK) != 0) ::mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
    std::ofstream(ctl) << "1";
}

// Whether the kernel has ended the connection behind a /dev/fuse descriptor:
// the device then polls as an error.
bool connection_ended(int fd) {
    pollfd p{fd, 0, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

int errno_of(const error_code& ec) {
    if (ec == make_error_code(errc::role_conflict)) return EROFS;
    if (ec == make_error_code(errc::misaligned)) return EINVAL;
    if (ec == make_error_code(errc::out_of_range)) return ENOSPC;
    if (ec == make_error_code(std::errc::operation_not_supported)) return EOPNOTSUPP;
    if (ec.category() == boost::system::system_category() || ec.category() == boost::system::generic_category())
        return ec.value();
    return EIO;
}

class fuse_frontend final : public frontend {
public:
    fuse_frontend(engine& e, const frontend_config& cfg) : e_(e), cfg_(cfg) {}
    ~fuse_frontend() override { (void)close(); }

    std::string_view kind() const noexcept override { return "fuse+loop"; }
    const std::string& device() const noexcept override { return loop_.path(); }
    result<void> start(std::string& why_not);
    result<void> close() override { return stop(false); }
    result<void> cut() override { return stop(true); }

private:
    // `cut`: the loop device stays in use, so the server threads would not
    // return: end the connection at once instead of after a grace period.
    result<void> stop(bool cut);
    void serve();
    static fuse_frontend& self(fuse_req_t req) { return *static_cast<fuse_frontend*>(fuse_req_userdata(req)); }
    struct stat attr(fuse_ino_t ino) const;
    void report(std::string_view op, std::uint64_t off, const error_code& ec);

    static void op_init(void* user, fuse_conn_info* conn);
    static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
    static void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*);
    static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info*);
    static void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*);
    static void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*);
    static void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
    static void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
    static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*);
    static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*);
    static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*);

    engine& e_;
    frontend_config cfg_;
    std::string mount_dir_, file_;
    fuse_session* se_ = nullptr;
    bool mounted_ = false;
    std::vector<std::thread> servers_;
    std::mutex mu_;
    std::condition_variable cv_;
    unsigned serving_ = 0;  // server threads not yet returned
    unsigned conn_minor_ = 0;  // /sys/fs/fuse/connections/<minor>
    loop_device loop_;
    std::atomic<unsigned> io_errors_{0};
};

struct stat fuse_frontend::attr(fuse_ino_t ino) const {
    struct stat st {};
    st.st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st.st_mode = S_IFDIR | 0700;
        st.st_nlink = 2;
    } else {
        st.st_mode = S_IFREG | 0600;
        st.st_nlink = 1;
        st.st_size = static_cast<off_t>(e_.size());
        st.st_blksize = 4096;
        st.st_blocks = st.st_size / 512;
    }
    return st;
}

void fuse_frontend::report(std::string_view op, std::uint64_t off, const error_code& ec) {
    // The first few failures are worth a line each; a dead disk is not worth thousands.
    if (io_errors_.fetch_add(1) < 8)
        log::error("store.io_error", "{} at offset {} failed: {}", op, off, ec.message());
}

void fuse_frontend::op_init(void*, fuse_conn_info* conn) {
    conn->max_write = max_request;
    conn->max_read = max_request;
    // Loop's direct I/O is asynchronous: let many requests be in flight at once.
    if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;  // every write reaches the engine before it completes
    conn->max_background = 128;
    conn->congestion_threshold = 96;
}

void fuse_frontend::op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    if (parent != FUSE_ROOT_ID || std::strcmp(name, volume_name) != 0) return (void)fuse_reply_err(req, ENOENT);
    fuse_entry_param ep{};
    ep.ino = volume_ino;
    ep.attr = self(req).attr(volume_ino);
    ep.attr_timeout = ep.entry_timeout = forever;
    fuse_reply_entry(req, &ep);
}

void fuse_frontend::op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    if (ino != FUSE_ROOT_ID && ino != volume_ino) return (void)fuse_reply_err(req, ENOENT);
    auto st = self(req).attr(ino);
    fuse_reply_attr(req, &st, forever);
}

void fuse_frontend::op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info*) {
    auto cur = self(req).attr(ino);
    // The volume's size is the engine's: a truncate to anything else is refused.
    if ((to_set & FUSE_SET_ATTR_SIZE) && st->st_size != cur.st_size) return (void)fuse_reply_err(req, EPERM);
    fuse_reply_attr(req, &cur, forever);
}

void fuse_frontend::op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    if (ino != volume_ino) return (void)fuse_reply_err(req, EISDIR);
    // A secondary never exposes the volume writable.
    if ((fi->flags & O_ACCMODE) != O_RDONLY && !self(req).e_.primary()) return (void)fuse_reply_err(req, EROFS);
    fi->direct_io = 1;  // no page cache here: the file system above has its own
    fi->keep_cache = 0;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

void fuse_frontend::op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
    struct freer {
        void operator()(std::byte* p) const { std::free(p); }
    };
    thread_local std::unique_ptr<std::byte, freer> buf(static_cast<std::byte*>(std::aligned_alloc(4096, max_request)));
    auto& f = self(req);
    auto total = f.e_.size();
    auto o = static_cast<std::uint64_t>(off);
    if (o >= total) return (void)fuse_reply_buf(req, nullptr, 0);
    auto n = std::min<std::uint64_t>({size, total - o, max_request});
    if (auto r = f.e_.read(o, {buf.get(), n}); !r) {
        f.report("read", o, r.error());
        return (void)fuse_reply_err(req, errno_of(r.error()));
    }
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.get()), n);
}

void fuse_frontend::op_write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off, fuse_file_info*) {
    auto& f = self(req);
    auto o = static_cast<std::uint64_t>(off);
    if (auto r = f.e_.write(o, {reinterpret_cast<const std::byte*>(buf), size}); !r) {
        if (r.error() != make_error_code(errc::role_conflict)) f.report("write", o, r.error());
        return (void)fuse_reply_err(req, errno_of(r.error()));
    }
    fuse_reply_write(req, size);
}

void fuse_frontend::op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
    // The loop device turns a flush (and a FUA write) into fsync of the file:
    // durable locally and, while connected, on the peer (engine::flush).
    auto& f = self(req);
    if (auto r = f.e_.flush(); !r) {
        f.report("flush", 0, r.error());
        return (void)fuse_reply_err(req, errno_of(r.error()));
    }
    fuse_reply_err(req, 0);
}

void fuse_frontend::op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info*) {
    // The loop device turns a discard into a punched hole and a write-zeroes
    // into a punched hole or a zeroed range, all with KEEP_SIZE: each means
    // "these blocks read as zeros", on both nodes (engine::zero).
    auto& f = self(req);
    auto o = static_cast<std::uint64_t>(off), n = static_cast<std::uint64_t>(len);
    int what = mode & ~FALLOC_FL_KEEP_SIZE;
    if (what == 0) {  // preallocation: the volume has a fixed size, nothing to allocate
        return (void)fuse_reply_err(req, o + n <= f.e_.size() ? 0 : EOPNOTSUPP);
    }
    if (!(mode & FALLOC_FL_KEEP_SIZE) || (what != FALLOC_FL_PUNCH_HOLE && what != FALLOC_FL_ZERO_RANGE))
        return (void)fuse_reply_err(req, EOPNOTSUPP);
    if (auto r = f.e_.zero(o, n); !r) {
        if (r.error() != make_error_code(errc::role_conflict) &&
            r.error() != make_error_code(std::errc::operation_not_supported))
            f.report("discard", o, r.error());
        return (void)fuse_reply_err(req, errno_of(r.error()));
    }
    fuse_reply_err(req, 0);
}

void fuse_frontend::op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    if (ino != FUSE_ROOT_ID) return (void)fuse_reply_err(req, ENOTDIR);
    std::string out(size, '\0');
    std::size_t used = 0;
    const std::pair<const char*, fuse_ino_t> entries[] = {{".", FUSE_ROOT_ID}, {"..", FUSE_ROOT_ID}, {volume_name, volume_ino}};
    for (off_t i = off; i < 3; ++i) {
        auto st = self(req).attr(entries[i].second);
        auto n = fuse_add_direntry(req, out.data() + used, size - used, entries[i].first, &st, i + 1);
        if (n > size - used) break;
        used += n;
    }
    fuse_reply_buf(req, out.data(), used);
}

result<void> fuse_frontend::start(std::string& why_not) {
    if (!e_.primary()) {
        why_not = "this node is not primary: the standby never exposes the volume";
        return make_error_code(errc::role_conflict);
    }
    mount_dir_ = cfg_.work_dir + "/fuse";
    file_ = mount_dir_ + "/" + volume_name;
    std::error_code fec;
    std::filesystem::create_directories(mount_dir_, fec);
    if (fec) {
        why_not = fmt::format("cannot create {}: {}", mount_dir_, fec.message());
        return errno_error(fec.value());
    }
    clean_stale_frontend(cfg_.work_dir);

    static const fuse_lowlevel_ops ops = [] {
        fuse_lowlevel_ops o{};
        o.init = op_init;
        o.lookup = op_lookup;
        o.getattr = op_getattr;
        o.setattr = op_setattr;
        o.open = op_open;
        o.read = op_read;
        o.write = op_write;
        o.flush = op_flush;
        o.release = op_release;
        o.fsync = op_fsync;
        o.readdir = op_readdir;
        o.fallocate = op_fallocate;
        return o;
    }();
    // fsname/subtype show in /proc/mounts, so that a stale mount can be found and named.
    std::string opts = fmt::format("fsname=tandem-volume,subtype=tandem,max_read={}", max_request);
    const char* argv[] = {"tandemd", "-o", opts.c_str()};
    fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
    se_ = fuse_session_new(&args, &ops, sizeof ops, this);
    fuse_opt_free_args(&args);  // the session parsed them into a copy of its own
    if (!se_) {
        why_not = "fuse_session_new failed (see the log above)";
        return errno_error(EINVAL);
    }
    if (fuse_session_mount(se_, mount_dir_.c_str()) != 0) {
        why_not = fmt::format("cannot mount the FUSE volume on {} (is /dev/fuse there and the fuse module loaded?)",
                              mount_dir_);
        return errno_error(ENODEV);
    }
    mounted_ = true;
    serving_ = cfg_.threads;
    for (unsigned i = 0; i < cfg_.threads; ++i) servers_.emplace_back([this] { serve(); });
    // Only now: a stat of the mount waits for the server's answer to INIT.
    struct stat mst {};
    if (::stat(mount_dir_.c_str(), &mst) == 0) conn_minor_ = minor(mst.st_dev);
    auto loop = loop_device::attach(file_, 4096, why_not);
    if (!loop) {
        (void)close();
        return loop.error();
    }
    loop_ = std::move(*loop);
    log::notice("store.frontend", "volume {} exposed as {} (FUSE at {}, loop {}, {} threads)", e_.size(), loop_.path(),
                mount_dir_, loop_.direct_io() ? "direct I/O" : "buffered", cfg_.threads);
    return {};
}

// One server thread. Its request buffer is placed so that a write's data starts
// on a 4 KiB boundary: the engine's O_DIRECT write takes it as it is. (libfuse's
// own loop mallocs its buffers, which put the data 96 bytes past a page and cost
// a copy of every written byte into an aligned bounce buffer.)
void fuse_frontend::serve() {
    struct freer {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::unique_ptr<std::byte, freer> mem(static_cast<std::byte*>(std::aligned_alloc(4096, 4096 + request_buffer)));
    fuse_buf buf{};
    while (mem && !fuse_session_exited(se_)) {
        buf.mem = mem.get() + 4096 - write_args;
        buf.size = request_buffer + write_args;
        int got = fuse_session_receive_buf(se_, &buf);
        if (got == -EINTR) continue;
        if (got <= 0) break;  // 0: the connection ended (unmounted, aborted)
        fuse_session_process_buf(se_, &buf);
    }
    if (!mem) log::error("store.frontend", "FUSE server thread: no memory for its request buffer");
    std::lock_guard lk(mu_);
    if (--serving_ == 0) cv_.notify_all();
}

result<void> fuse_frontend::stop(bool cut) {
    result<void> out;
    if (auto r = loop_.detach(); !r) out = r;
    if (se_) {
        fuse_session_exit(se_);
        // Lazy, as the loop device may still be letting go. Not fuse_session_unmount():
        // it also closes the session's descriptor, which the server threads may be
        // reading at that moment (and the number could be reused under them).
        // fuse_session_destroy() closes it once they are gone.
        if (mounted_ && ::umount2(mount_dir_.c_str(), MNT_DETACH) != 0)
            log::warning("store.frontend", "unmounting {}: {}", mount_dir_, std::strerror(errno));
        mounted_ = false;
        if (!servers_.empty()) {
            // The servers return when the connection ends, which is when the last
            // user of the file is gone. Past a grace period, end it by force.
            std::unique_lock lk(mu_);
            if (cut || !cv_.wait_for(lk, std::chrono::seconds(5), [&] { return serving_ == 0; })) {
                lk.unlock();
                log::warning("store.frontend", "{}: aborting connection {}",
                             cut ? "the volume is still in use" : "FUSE server still busy 5 s after unmount",
                             conn_minor_);
                abort_connection(conn_minor_);
            }
            for (auto& t : servers_) t.join();
            servers_.clear();
        }
        // fuse_session_unmount() is what frees the session's copy of the mount
        // point. It unmounts nothing when the connection has ended; otherwise it
        // would try the (lazily unmounted) directory again and complain. Servers
        // can return on the exit flag while the connection lives on: end it
        // here, as closing the descriptor in fuse_session_destroy() would.
        if (!connection_ended(fuse_session_fd(se_)) && conn_minor_) abort_connection(conn_minor_);
        if (connection_ended(fuse_session_fd(se_))) fuse_session_unmount(se_);
        fuse_session_destroy(se_);
        se_ = nullptr;
    }
    return out;
}

}  // namespace

result<std::unique_ptr<frontend>> expose_fuse(engine& e, const frontend_config& cfg, std::string& why_not) {
    auto f = std::make_unique<fuse_frontend>(e, cfg);
    if (auto r = f->start(why_not); !r) return r.error();
    return std::unique_ptr<frontend>(std::move(f));
}

void clean_stale_frontend(const std::string& work_dir) {
    // A FUSE mount whose server died answers every stat with ENOTCONN.
    auto dir = work_dir + "/fuse";
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0 || errno != ENOTCONN) return;
    if (::umount2(dir.c_str(), MNT_DETACH) == 0)
        log::warning("store.stale", "detached the FUSE volume mount at {} left by an earlier tandemd", dir);
    else
        log::warning("store.stale", "cannot detach the stale FUSE mount at {}: {}", dir, std::strerror(errno));
}

std::string_view to_string(frontend_kind k) noexcept {
    switch (k) {
        case frontend_kind::automatic: return "auto";
        case frontend_kind::fuse: return "fuse";
        case frontend_kind::nbd: return "nbd";
    }
    return "?";
}

}  // namespace tandem::replication
