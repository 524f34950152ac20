// tests: the front ends over a real replicated engine pair — a file system on FUSE + loop, and the NBD server.
#include "tandem/replication/frontend.hpp"
#include "tandem/replication/nbd.hpp"

#include "support/engine_pair.hpp"
#include "support/netns.hpp"
#include "support/tempdir.hpp"

#include <endian.h>
#include <fcntl.h>
#include <linux/nbd.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <optional>

using namespace tandem;
using namespace tandem::test;

namespace {

// A mount made by the test, detached whatever happens.
struct mounted {
    std::string dir;
    mounted(const std::string& dev, std::string d) : dir(std::move(d)) {
        std::filesystem::create_directories(dir);
        run_ok(fmt::format("mount -t ext4 {} {}", dev, dir));
    }
    ~mounted() {
        if (!dir.empty()) ::umount2(dir.c_str(), MNT_DETACH);
    }
    void unmount() {
        run_ok("umount " + dir);
        dir.clear();
    }
};

// Alpha primary and in sync with beta, as after a new cluster's first sync.
struct pair_in_sync {
    event_log log;
    node a{"alpha", true, 64 * mib, false}, b{"beta", false, 64 * mib, false};
    pair_in_sync() { in_sync_with_alpha_primary(a, b, log); }
};

// The pair, with alpha's volume exposed through FUSE + loop at `dev`.
struct fuse_on_alpha : pair_in_sync {
    temp_dir dir;
    std::unique_ptr<replication::frontend> fe;
    std::string dev;
    explicit fuse_on_alpha(unsigned threads) {
        std::string why;
        auto f = replication::expose_fuse(*a.eng, {replication::frontend_kind::fuse, dir.path().string(), threads}, why);
        INFO(why);
        REQUIRE(f);
        fe = std::move(*f);
        dev = fe->device();
    }
};

// One NBD request as nbd.ko would send it, and its reply.
struct nbd_client {
    int fd;
    std::uint64_t handle = 0;
    std::uint32_t request(std::uint32_t type, std::uint64_t off, std::span<std::byte> data, std::uint32_t flags = 0,
                          std::optional<std::uint32_t> length = std::nullopt) {
        unsigned char h[28];
        auto put32 = [](unsigned char* p, std::uint32_t v) { v = htobe32(v); std::memcpy(p, &v, 4); };
        auto put64 = [](unsigned char* p, std::uint64_t v) { v = htobe64(v); std::memcpy(p, &v, 8); };
        put32(h, NBD_REQUEST_MAGIC);
        put32(h + 4, type | flags);
        put64(h + 8, ++handle);
        put64(h + 16, off);
        put32(h + 24, length.value_or(static_cast<std::uint32_t>(data.size())));
        REQUIRE(::write(fd, h, sizeof h) == sizeof h);
        if (type == NBD_CMD_WRITE) REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
        if (type == NBD_CMD_DISC) return 0;
        unsigned char r[16];
        REQUIRE(::recv(fd, r, sizeof r, MSG_WAITALL) == sizeof r);
        std::uint32_t magic, err;
        std::uint64_t got;
        std::memcpy(&magic, r, 4);
        std::memcpy(&err, r + 4, 4);
        std::memcpy(&got, r + 8, 8);
        CHECK(be32toh(magic) == NBD_REPLY_MAGIC);
        CHECK(be64toh(got) == handle);
        err = be32toh(err);
        if (type == NBD_CMD_READ && err == 0)
            REQUIRE(::recv(fd, data.data(), data.size(), MSG_WAITALL) == static_cast<ssize_t>(data.size()));
        return err;
    }
    // A trim carries its length in the header and no payload.
    std::uint32_t trim(std::uint64_t off, std::uint32_t len) { return request(NBD_CMD_TRIM, off, {}, 0, len); }
};

// Blocks allocated to a file, in bytes.
std::uint64_t allocated(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

}  // namespace

TEST_CASE("an ext4 file system on the FUSE front end survives unmount, remount and fsck, and is replicated",
          "[kernel][store][frontend]") {
    REQUIRE_DIRECT_IO();
    if (!std::filesystem::exists("/dev/fuse")) TANDEM_SKIP("no /dev/fuse on this machine");
    fuse_on_alpha p(4);
    auto& dir = p.dir;
    auto& fe = p.fe;
    const auto& dev = p.dev;
    CHECK(dev.rfind("/dev/loop", 0) == 0);

    run_ok(fmt::format("mkfs.ext4 -q -F {}", dev));
    auto mnt = (dir.path() / "store").string();
    {
        mounted m(dev, mnt);
        run_ok(fmt::format("head -c 8M /dev/urandom > {0}/data && sync -f {0}/data && sha256sum {0}/data > {1}/sum",
                           mnt, dir.path().string()));
        m.unmount();
    }
    {
        mounted m(dev, mnt);
        // The checksum file names the path under the mount: check it in place.
        CHECK(run(fmt::format("sha256sum -c --quiet {}/sum", dir.path().string())).status == 0);
        m.unmount();
    }
    auto fsck = run(fmt::format("e2fsck -fn {}", dev));
    INFO(fsck.out);
    CHECK(fsck.status == 0);
    REQUIRE(fe->close());

    // Protocol C: every write the file system completed is on beta too.
    REQUIRE(p.a.eng->flush());
    CHECK(p.a.vol.digest() == p.b.vol.digest());
}

TEST_CASE("fstrim through the FUSE front end zeroes the freed blocks on both nodes and frees them in both volumes",
          "[kernel][store][frontend]") {
    REQUIRE_DIRECT_IO();
    if (!std::filesystem::exists("/dev/fuse")) TANDEM_SKIP("no /dev/fuse on this machine");
    fuse_on_alpha p(4);
    run_ok(fmt::format("mkfs.ext4 -q -F -E nodiscard {}", p.dev));
    auto mnt = (p.dir.path() / "store").string();
    mounted m(p.dev, mnt);
    run_ok(fmt::format("head -c 24M /dev/urandom > {0}/big && head -c 4M /dev/urandom > {0}/kept && sync", mnt));
    auto before_a = allocated(p.a.vol.path), before_b = allocated(p.b.vol.path);
    run_ok(fmt::format("rm {0}/big && sync", mnt));
    auto trimmed = run(fmt::format("fstrim -v {}", mnt));
    INFO(trimmed.out);
    REQUIRE(trimmed.status == 0);
    CHECK_THAT(trimmed.out, Catch::Contains("bytes") && Catch::Contains("trimmed"));
    // The 24 MiB file's blocks (and the rest of the free space) are holes now in
    // both volume files: the discard reached the secondary's disk too.
    INFO("alpha " << before_a << " -> " << allocated(p.a.vol.path) << ", beta " << before_b << " -> "
                  << allocated(p.b.vol.path));
    CHECK(allocated(p.a.vol.path) + 24 * mib <= before_a);
    CHECK(allocated(p.b.vol.path) + 24 * mib <= before_b);
    CHECK(run(fmt::format("sha256sum {0}/kept > {1}/sum", mnt, p.dir.path().string())).status == 0);
    m.unmount();
    auto fsck = run(fmt::format("e2fsck -fn {}", p.dev));
    INFO(fsck.out);
    CHECK(fsck.status == 0);
    REQUIRE(p.fe->close());
    REQUIRE(p.a.eng->flush());
    CHECK(p.a.vol.digest() == p.b.vol.digest());
}

TEST_CASE("the standby never exposes the volume", "[kernel][store][frontend]") {
    REQUIRE_DIRECT_IO();
    pair_in_sync p;
    temp_dir dir;
    std::string why;
    auto fe = replication::expose_fuse(*p.b.eng, {replication::frontend_kind::fuse, dir.path().string(), 2}, why);
    REQUIRE_FALSE(fe);
    CHECK(why.find("not primary") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir.path() / "fuse" / "volume"));
}

TEST_CASE("the NBD server answers reads, writes, FUA, flush and bad requests the way nbd.ko expects",
          "[kernel][store][frontend][nbd]") {
    REQUIRE_DIRECT_IO();
    pair_in_sync p;
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    unique_fd ours(sv[0]), theirs(sv[1]);
    auto served = std::async(std::launch::async, [&] { return replication::nbd_serve(*p.a.eng, ours.get()); });
    nbd_client c{theirs.get()};

    auto data = pattern(64 * 1024, 7);
    CHECK(c.request(NBD_CMD_WRITE, 1 * mib, data) == 0);
    auto fua = pattern(4096, 8);
    CHECK(c.request(NBD_CMD_WRITE, 2 * mib, fua, NBD_CMD_FLAG_FUA) == 0);
    std::vector<std::byte> back(data.size());
    CHECK(c.request(NBD_CMD_READ, 1 * mib, back) == 0);
    CHECK(back == data);
    CHECK(c.request(NBD_CMD_FLUSH, 0, {}) == 0);
    std::vector<std::byte> odd(100);
    CHECK(c.request(NBD_CMD_WRITE, 0, odd) == EINVAL);
    std::vector<std::byte> past(4096);
    CHECK(c.request(NBD_CMD_READ, 64 * mib, past) == ENOSPC);
    // A trim of the first half of the 64 KiB: zeros there on both nodes.
    CHECK(c.trim(1 * mib, 32 * 1024) == 0);
    CHECK(c.trim(1 * mib + 100, 4096) == EINVAL);
    CHECK(c.request(NBD_CMD_READ, 1 * mib, back) == 0);
    std::vector<std::byte> zeros(32 * 1024);
    CHECK(std::equal(zeros.begin(), zeros.end(), back.begin()));
    CHECK(std::equal(data.begin() + 32 * 1024, data.end(), back.begin() + 32 * 1024));
    c.request(NBD_CMD_DISC, 0, {});
    CHECK(served.get() == 9);

    // Both writes and the trim reached beta (protocol C) at the offsets given.
    CHECK(p.a.vol.digest(1 * mib, data.size()) == p.b.vol.digest(1 * mib, data.size()));
    CHECK(p.b.vol.digest(1 * mib, zeros.size()) == XXH3_64bits(zeros.data(), zeros.size()));
    CHECK(p.b.vol.digest(2 * mib, 4096) == XXH3_64bits(fua.data(), fua.size()));

    // The secondary's engine refuses writes: the NBD reply says read-only.
    int sv2[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2) == 0);
    unique_fd ours2(sv2[0]), theirs2(sv2[1]);
    auto served2 = std::async(std::launch::async, [&] { return replication::nbd_serve(*p.b.eng, ours2.get()); });
    nbd_client c2{theirs2.get()};
    CHECK(c2.request(NBD_CMD_WRITE, 0, fua) == EROFS);
    theirs2.reset();  // a closed socket ends the server too
    CHECK(served2.get() == 1);
}

TEST_CASE("the NBD front end attaches through nbd.ko's netlink family", "[kernel][store][frontend][nbd]") {
    REQUIRE_DIRECT_IO();
    std::string why;
    if (!replication::have_nbd()) TANDEM_SKIP("no nbd.ko in this kernel; the appliance image tests run this path");
    pair_in_sync p;
    temp_dir dir;
    auto fe = replication::expose_nbd(*p.a.eng, {replication::frontend_kind::nbd, dir.path().string(), 2}, why);
    INFO(why);
    REQUIRE(fe);
    run_ok(fmt::format("mkfs.ext4 -q -F {}", (*fe)->device()));
    CHECK(run(fmt::format("e2fsck -fn {}", (*fe)->device())).status == 0);
    REQUIRE((*fe)->close());
    REQUIRE(p.a.eng->flush());
    CHECK(p.a.vol.digest() == p.b.vol.digest());
}

TEST_CASE("a file system left mounted on the FUSE front end by a stop while it was busy is known as stale",
          "[kernel][store][frontend]") {
    REQUIRE_DIRECT_IO();
    if (!std::filesystem::exists("/dev/fuse")) TANDEM_SKIP("no /dev/fuse on this machine");
    fuse_on_alpha p(2);
    auto& dir = p.dir;
    auto& fe = p.fe;
    const auto& dev = p.dev;
    run_ok(fmt::format("mkfs.ext4 -q -F {}", dev));
    auto mnt = (dir.path() / "store").string();
    mounted m(dev, mnt);
    struct stat st {};
    REQUIRE(::stat(dev.c_str(), &st) == 0);
    auto major_no = major(st.st_rdev), minor_no = minor(st.st_rdev);
    // While the front end serves it, the device is live, not stale.
    CHECK(replication::stale_frontend_device(major_no, minor_no, dir.path().string()).empty());

    // A holder keeps the file system busy, so the front end stops under it, as
    // tandemd does when it is stopped with /store in use.
    int held = ::open((mnt + "/held").c_str(), O_CREAT | O_RDWR, 0600);
    REQUIRE(held >= 0);
    (void)fe->close();
    fe.reset();
    auto stale = replication::stale_frontend_device(major_no, minor_no, dir.path().string());
    INFO(run("cat /sys/dev/block/" + std::to_string(major_no) + ":" + std::to_string(minor_no) + "/loop/backing_file").out);
    CHECK(stale.find(dev) == 0);
    ::close(held);
}

TEST_CASE("a loop device over any other file is not taken for a stale front end", "[kernel][store][frontend]") {
    temp_dir dir;
    auto file = (dir.path() / "volume").string();
    run_ok("truncate -s 16M " + file);
    auto dev = run_ok("losetup -f --show " + file);
    while (!dev.empty() && dev.back() == '\n') dev.pop_back();
    struct stat st {};
    REQUIRE(::stat(dev.c_str(), &st) == 0);
    CHECK(replication::stale_frontend_device(major(st.st_rdev), minor(st.st_rdev), dir.path().string()).empty());
    // Not even when the file is called "volume" under a directory named like ours.
    CHECK(replication::stale_frontend_device(major(st.st_rdev), minor(st.st_rdev), "/elsewhere").empty());
    run_ok("losetup -d " + dev);
}
