// tests: the recovery tool — provision, reinstall, factory-reset and flatten on loop-device disks, then a boot of the result.
#include "support/image.hpp"
#include "support/netns.hpp"
#include "support/skip.hpp"
#include "support/tempdir.hpp"
#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <regex>
#include <stdexcept>
#include <string>

using namespace tandem::test;

namespace {

constexpr std::uint64_t MiB = 1 << 20;
const std::string image = "build/image/disk.img";
const std::string tool = "image/recovery/tandem-recovery";
const std::string wrapper = "image/recovery/recovery.py";

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

// A loop device over a disk file, made by the test and always detached when it ends.
class loop_device {
public:
    explicit loop_device(const std::string& file) {
        auto r = run("losetup -f --show " + file + " 2>&1");
        if (r.status != 0) throw std::runtime_error("losetup -f --show " + file + ": " + r.out);
        path_ = trim(r.out);
    }
    ~loop_device() { detach(); }
    loop_device(const loop_device&) = delete;
    loop_device& operator=(const loop_device&) = delete;

    // Before a boot: qemu opens the file, and nothing else should hold it.
    void detach() {
        if (!path_.empty()) run("losetup -d " + path_);
        path_.clear();
    }
    [[nodiscard]] const std::string& path() const { return path_; }

private:
    std::string path_;
};

// A read-only mount of one partition of a disk (by byte offset: there are no partition
// nodes), unmounted when the test ends; mount's own loop device goes with it (autoclear).
class region_mount {
public:
    region_mount(const std::string& disk, std::uint64_t off, std::uint64_t size, const std::filesystem::path& dir)
        : dir_(dir) {
        std::filesystem::create_directories(dir_);
        run_ok("mount -o ro,loop,offset=" + std::to_string(off) + ",sizelimit=" + std::to_string(size) + " " + disk +
               " " + dir_.string());
    }
    ~region_mount() { run("umount " + dir_.string()); }
    region_mount(const region_mount&) = delete;
    region_mount& operator=(const region_mount&) = delete;

private:
    std::filesystem::path dir_;
};

struct part {
    std::uint64_t start = 0;  // bytes
    std::uint64_t size = 0;   // bytes
};

// A partition by GPT name, from `sfdisk -d` (sectors of 512 bytes).
part find_part(const std::string& disk, const std::string& name) {
    auto dump = run_ok("sfdisk -d " + disk);
    std::regex line("start=\\s*(\\d+), size=\\s*(\\d+),.*name=\"" + name + "\"");
    std::smatch m;
    if (!std::regex_search(dump, m, line)) throw std::runtime_error("no partition " + name + " on " + disk + ":\n" + dump);
    return {std::stoull(m[1]) * 512, std::stoull(m[2]) * 512};
}

std::string dd_region(const std::string& disk, part p) {
    return "dd if=" + disk + " bs=1M iflag=skip_bytes,count_bytes skip=" + std::to_string(p.start) +
           " count=" + std::to_string(p.size) + " status=none";
}

std::string region_sha(const std::string& disk, part p) {
    return trim(run_ok(dd_region(disk, p) + " | sha256sum | cut -d' ' -f1"));
}

bool region_is_zero(const std::string& disk, part p) {
    return run(dd_region(disk, p) + " | cmp -s -n " + std::to_string(p.size) + " - /dev/zero").status == 0;
}

// Writes a recognisable pattern at the start and the end of a region (where DRBD keeps
// its internal metadata), so "kept" and "wiped" can both be told apart from zeros.
void mark_region(const std::string& disk, part p) {
    run_ok("yes TANDEM-STORE-MARK | head -c 8M | dd of=" + disk + " bs=1M oflag=seek_bytes conv=notrunc,fsync seek=" +
           std::to_string(p.start) + " status=none");
    run_ok("yes TANDEM-DRBD-MD | head -c 1M | dd of=" + disk + " bs=1M oflag=seek_bytes conv=notrunc,fsync seek=" +
           std::to_string(p.start + p.size - MiB) + " status=none");
}

std::string fs_field(const std::string& disk, part p, const std::string& field) {
    return trim(run_ok("tune2fs -l '" + disk + "?offset=" + std::to_string(p.start) + "' | sed -n 's/^" + field +
                       ":[[:space:]]*//p'"));
}

// A sparse copy of the built image in a directory of the test's own.
std::string copy_image(const temp_dir& dir, const std::string& name = "disk.img") {
    auto to = (dir.path() / name).string();
    run_ok("cp --sparse=always " + image + " " + to);
    return to;
}

// Boots DISK from SLOT with image/test.sh; the console is left beside the disk as serial.log.
cmd_result boot(const std::string& disk, const std::string& slot) {
    return run("DISK=" + disk + " ROOT=" + slot + " image/test.sh build/image 600 2>&1");
}

std::string console(const std::string& disk) {
    return read_file(std::filesystem::path(disk).parent_path() / "serial.log");
}

bool has(const std::string& out, const std::string& what) { return out.find(what) != std::string::npos; }

// Boots DISK from SLOT and checks the self-test passed with that slot as the
// root: root_a is the GPT's second partition (vda2), root_b its third (vda3).
void check_boots(const std::string& disk, const std::string& slot) {
    auto booted = boot(disk, slot);
    INFO(booted.out);
    CHECK(booted.status == 0);
    CHECK(has(booted.out, "S:ACTIVE/ONLINE"));
    CHECK(has(console(disk), std::string("EXT4-fs (") + (slot == "root_a" ? "vda2" : "vda3") + "): mounted filesystem"));
}

// What every test here needs; returns why not, or "" when all is there.
std::string missing() {
    if (::geteuid() != 0) return "recovery tests need root (loop devices, mount)";
    if (run("losetup -f > /dev/null 2>&1").status != 0) return "no free loop device";
    if (run("command -v qemu-system-x86_64 > /dev/null").status != 0) return "qemu-system-x86_64 is not installed";
    return "";
}


}  // namespace

TEST_CASE("recovery: a damaged image or a missing manifest is refused before anything is written", "[image]") {
    if (auto why = missing(); !why.empty()) TANDEM_SKIP(why);
    TANDEM_REQUIRE_IMAGE();
    temp_dir dir;
    // The target: the image's partition table on an otherwise empty sparse file. Every
    // partition is a hole, so any write of data shows as allocated blocks.
    auto target_file = (dir.path() / "target.img").string();
    run_ok("truncate -s $(stat -c %s " + image + ") " + target_file);
    run_ok("sfdisk -d " + image + " | sfdisk -q " + target_file);
    std::filesystem::create_directory(dir.path() / "bad");
    auto bad = copy_image(dir, "bad/disk.img");
    run_ok("cp build/image/SHA256SUMS " + (dir.path() / "bad").string() + "/");
    // One byte inside root_a's data differs from what the manifest says.
    run_ok("printf X | dd of=" + bad + " bs=1 seek=" + std::to_string(2 * MiB + 1024) + " conv=notrunc status=none");
    loop_device loop(target_file);
    auto blocks = [&] { return trim(run_ok("sync && stat -c %b " + target_file)); };
    auto gpt = [&] { return trim(run_ok("sfdisk -d " + target_file + " | sha256sum")); };
    auto blocks_before = blocks(), gpt_before = gpt();

    auto flat = run("echo flatten | " + tool + " flatten --image " + bad + " --target " + loop.path() + " 2>&1");
    INFO(flat.out);
    CHECK(flat.status == 1);
    CHECK(has(flat.out, "sha256 is"));
    CHECK(has(flat.out, "nothing was written"));
    CHECK_FALSE(has(flat.out, "writing a new GPT"));

    std::filesystem::remove(dir.path() / "bad" / "SHA256SUMS");
    auto no_manifest = run(tool + " reinstall --yes --image " + bad + " --target " + loop.path() + " 2>&1");
    INFO(no_manifest.out);
    CHECK(no_manifest.status == 1);
    CHECK(has(no_manifest.out, "cannot read its manifest"));

    // A manifest without a line for the image is no verification either.
    dir.write("bad/SHA256SUMS", "0000000000000000000000000000000000000000000000000000000000000000  vmlinuz\n");
    auto no_line = run(tool + " factory-reset --yes --image " + bad + " --target " + loop.path() + " 2>&1");
    INFO(no_line.out);
    CHECK(no_line.status == 1);
    CHECK(has(no_line.out, "has no line for disk.img"));

    CHECK(blocks() == blocks_before);
    CHECK(gpt() == gpt_before);
}

TEST_CASE("recovery: the disk the system runs from and a disk with a mounted partition are refused", "[image]") {
    if (auto why = missing(); !why.empty()) TANDEM_SKIP(why);
    TANDEM_REQUIRE_IMAGE();
    temp_dir dir;

    SECTION("the running disk, refused before the image is even looked at") {
        auto src = trim(run("findmnt -n -o SOURCE /").out);
        if (src.rfind("/dev/", 0) != 0) TANDEM_SKIP("/ is not on a block device here (" + src + ")");
        auto disk = trim(run_ok("lsblk -n -s -r -p -o NAME,TYPE " + src + " | awk '$2 == \"disk\" {print $1}' | tail -1"));
        REQUIRE_FALSE(disk.empty());
        // The image does not exist: if the tool looked at it first, it would say so instead.
        std::string nothing = (dir.path() / "no-such-disk.img").string();
        bool traced = run("command -v strace > /dev/null").status == 0;
        for (std::string cmd : {"provision --config " + dir.path().string(), "reinstall --yes --image " + nothing,
                                "factory-reset --yes --image " + nothing, "flatten --image " + nothing}) {
            auto trace = (dir.path() / "trace").string();
            auto r = run(std::string(traced ? "strace -f -e trace=open,openat -o " + trace + " " : "") + "sh -c 'echo flatten | " +
                         tool + " " + cmd + " --target " + disk + "' 2>&1");
            INFO(cmd << "\n" << r.out);
            CHECK(r.status == 1);
            CHECK(has(r.out, disk + " is the disk the system runs from"));
            if (traced) {
                // Not opened for writing at all, not even to be closed again.
                auto opens = run("grep -F '\"" + disk + "\"' " + trace + " | grep -E 'O_RDWR|O_WRONLY'").out;
                CHECK(opens.empty());
            }
        }
        auto seed = run(wrapper + " -r --default --reboot " + nothing + " 2>&1");
        INFO(seed.out);
        CHECK(seed.status == 1);
        CHECK(has(seed.out, "(no --target given) is the disk the system runs from"));
        CHECK(has(seed.out, "boot a rescue system"));
    }

    SECTION("a partition of the target is mounted") {
        auto file = copy_image(dir);
        loop_device loop(file);
        auto config = find_part(loop.path(), "config");
        auto before = region_sha(loop.path(), config);
        auto cfg = dir.path() / "node";
        std::filesystem::create_directory(cfg);
        dir.write("node/tandem.toml", "[cluster]\nname = \"other\"\n");
        {
            region_mount mounted(loop.path(), config.start, config.size, dir.path() / "mnt");
            for (const auto& target : {loop.path(), file}) {
                auto r = run(tool + " provision --config " + cfg.string() + " --target " + target + " 2>&1");
                INFO(r.out);
                CHECK(r.status == 1);
                CHECK(has(r.out, "has a mounted file system"));
                CHECK(has(r.out, (dir.path() / "mnt").string()));
            }
            auto r = run(tool + " reinstall --yes --image " + image + " --target " + loop.path() + " 2>&1");
            INFO(r.out);
            CHECK(r.status == 1);
            CHECK(has(r.out, "has a mounted file system"));
        }
        CHECK(region_sha(loop.path(), config) == before);
        // Unmounted, the same provision goes through: the refusal was the mount's.
        auto r = run(tool + " provision --config " + cfg.string() + " --target " + loop.path() + " 2>&1");
        INFO(r.out);
        CHECK(r.status == 0);
        CHECK(region_sha(loop.path(), config) != before);
    }
}

TEST_CASE("recovery: reinstall into root_b keeps config and store, and root_b boots", "[image]") {
    if (auto why = missing(); !why.empty()) TANDEM_SKIP(why);
    TANDEM_REQUIRE_IMAGE();
    temp_dir dir;
    auto file = copy_image(dir);
    loop_device loop(file);
    auto root_a = find_part(loop.path(), "root_a"), root_b = find_part(loop.path(), "root_b");
    auto config = find_part(loop.path(), "config"), store = find_part(loop.path(), "store");
    mark_region(loop.path(), store);
    auto a = region_sha(loop.path(), root_a), c = region_sha(loop.path(), config), s = region_sha(loop.path(), store);
    auto b = region_sha(loop.path(), root_b);

    auto no = run("echo no | " + tool + " reinstall --image " + image + " --target " + loop.path() + " --slot root_b 2>&1");
    INFO(no.out);
    CHECK(no.status == 1);
    CHECK(region_sha(loop.path(), root_b) == b);

    auto bad_slot = run(tool + " reinstall --image " + image + " --target " + loop.path() + " --slot root_c 2>&1");
    CHECK(bad_slot.status == 2);
    CHECK(has(bad_slot.out, "root_a"));

    auto r = run("echo reinstall | " + tool + " reinstall --image " + image + " --target " + loop.path() +
                 " --slot root_b 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(has(r.out, "recovery: root_b 64"));  // progress at least every 64 MiB
    auto slot_mib = std::to_string(find_part(image, "root_a").size / MiB);
    CHECK(has(r.out, "recovery: root_b " + slot_mib + "/" + slot_mib + " MiB (100 %)"));
    CHECK(has(r.out, "reinstall done in"));
    CHECK(region_sha(loop.path(), root_a) == a);
    CHECK(region_sha(loop.path(), config) == c);
    CHECK(region_sha(loop.path(), store) == s);
    CHECK(fs_field(loop.path(), root_b, "Filesystem volume name") == "root_b");
    CHECK(fs_field(loop.path(), root_b, "Filesystem UUID") != fs_field(loop.path(), root_a, "Filesystem UUID"));

    loop.detach();
    check_boots(file, "root_b");
}

TEST_CASE("recovery: factory-reset keeps the store with --keep-store, wipes it without, and the node boots", "[image]") {
    if (auto why = missing(); !why.empty()) TANDEM_SKIP(why);
    TANDEM_REQUIRE_IMAGE();
    temp_dir dir;
    auto file = copy_image(dir);
    loop_device loop(file);
    auto root_b = find_part(loop.path(), "root_b"), config = find_part(loop.path(), "config");
    auto store = find_part(loop.path(), "store");
    auto factory_config = region_sha(image, find_part(image, "config"));

    // A provisioned node: its own identity on the config partition, data on the store.
    std::filesystem::create_directories(dir.path() / "node" / "network");
    dir.write("node/tandem.toml", "[cluster]\nname = \"provisioned\"\n");
    dir.write("node/cluster.key", std::string(64, 'k'), 0600);
    dir.write("node/network/20-eth1.network", "[Match]\nName=eth1\n");
    auto prov = run(tool + " provision --target " + loop.path() + " --config " + (dir.path() / "node").string() + " 2>&1");
    INFO(prov.out);
    REQUIRE(prov.status == 0);
    REQUIRE(region_sha(loop.path(), config) != factory_config);
    mark_region(loop.path(), store);
    auto s = region_sha(loop.path(), store);
    auto c = region_sha(loop.path(), config);

    auto no = run("echo yes | " + tool + " factory-reset --image " + image + " --target " + loop.path() + " 2>&1");
    INFO(no.out);
    CHECK(no.status == 1);
    CHECK(has(no.out, "not confirmed"));
    CHECK(region_sha(loop.path(), store) == s);
    CHECK(region_sha(loop.path(), config) == c);

    auto kept = run("echo reset | " + tool + " factory-reset --keep-store --image " + image + " --target " +
                    loop.path() + " 2>&1");
    INFO(kept.out);
    REQUIRE(kept.status == 0);
    auto slot_mib = std::to_string(find_part(image, "root_a").size / MiB);
    CHECK(has(kept.out, "recovery: root_a " + slot_mib + "/" + slot_mib + " MiB (100 %)"));
    CHECK(region_sha(loop.path(), store) == s);
    CHECK(region_sha(loop.path(), config) == factory_config);
    CHECK(region_is_zero(loop.path(), {root_b.start, MiB}));

    auto wiped = run(tool + " factory-reset --yes --image " + image + " --target " + loop.path() + " 2>&1");
    INFO(wiped.out);
    REQUIRE(wiped.status == 0);
    CHECK(region_is_zero(loop.path(), store));  // data and the metadata at the end alike

    loop.detach();
    // The self-test passes only with the factory config back: the provisioned one names no node.
    check_boots(file, "root_a");
}

TEST_CASE("recovery: flatten writes a new layout onto a larger disk, only after the typed word, and it boots",
          "[image]") {
    if (auto why = missing(); !why.empty()) TANDEM_SKIP(why);
    TANDEM_REQUIRE_IMAGE();
    temp_dir dir;
    auto i_root_a = find_part(image, "root_a"), i_root_b = find_part(image, "root_b");
    auto i_config = find_part(image, "config"), i_esp = find_part(image, "esp");
    // The least flatten takes: the ESP, both slots, config, a 64 MiB store, 2 MiB for the partition table.
    auto least = (i_esp.size + i_root_a.size + i_root_b.size + i_config.size) / MiB + 64 + 2;
    // The larger disk: a store of 1 GiB more than the least.
    auto big_mib = least + 1024;
    auto file = (dir.path() / "big.img").string();
    run_ok("truncate -s " + std::to_string(big_mib) + "M " + file);
    loop_device loop(file);

    auto small = (dir.path() / "small.img").string();
    run_ok("truncate -s " + std::to_string(least - 30) + "M " + small);
    auto tiny = run("echo flatten | " + tool + " flatten --image " + image + " --target " + small + " 2>&1");
    INFO(tiny.out);
    CHECK(tiny.status == 1);
    CHECK(has(tiny.out, "is " + std::to_string(least - 30) + " MiB; flatten needs at least " + std::to_string(least) +
                            " MiB"));

    for (std::string answer : {"flaten", ""}) {
        auto r = run("printf '" + answer + "\\n' | " + tool + " flatten --image " + image + " --target " + loop.path() +
                     " 2>&1");
        INFO(answer << "\n" << r.out);
        CHECK(r.status == 1);
        CHECK(has(r.out, "nothing was written"));
    }
    auto yes = run(tool + " flatten --yes --image " + image + " --target " + loop.path() + " 2>&1");
    CHECK(yes.status == 2);  // there is no --yes for flatten
    run_ok("sync");
    CHECK(trim(run_ok("stat -c %b " + file)) == "0");  // not one block of the sparse file written
    CHECK(run("sfdisk -d " + loop.path() + " 2>&1").status != 0);

    auto r = run("echo flatten | " + tool + " flatten --image " + image + " --target " + loop.path() + " 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(has(r.out, "flatten done in"));
    auto root_a = find_part(loop.path(), "root_a"), root_b = find_part(loop.path(), "root_b");
    auto config = find_part(loop.path(), "config"), store = find_part(loop.path(), "store");
    CHECK(root_a.size == i_root_a.size);
    CHECK(root_b.size == i_root_b.size);
    CHECK(config.size == i_config.size);
    // The store takes the rest: it ends within the last MiB, before the backup GPT.
    CHECK(store.start + store.size + MiB >= big_mib * MiB);
    CHECK(store.size > 1024 * MiB);
    CHECK(fs_field(loop.path(), root_a, "Filesystem volume name") == "root_a");
    CHECK(fs_field(loop.path(), root_b, "Filesystem volume name") == "root_b");
    CHECK(fs_field(loop.path(), root_b, "Filesystem UUID") != fs_field(loop.path(), root_a, "Filesystem UUID"));
    CHECK(region_sha(loop.path(), config) == region_sha(image, find_part(image, "config")));
    CHECK(region_sha(loop.path(), find_part(loop.path(), "esp")) == region_sha(image, i_esp));  // the boot loader
    CHECK(region_is_zero(loop.path(), store));

    loop.detach();
    check_boots(file, "root_a");
}

TEST_CASE("recovery: recovery.py -r --default --reboot, the seeds' form, flattens a named disk only", "[image]") {
    if (auto why = missing(); !why.empty()) TANDEM_SKIP(why);
    TANDEM_REQUIRE_IMAGE();
    temp_dir dir;

    auto own = run("echo flatten | " + wrapper + " -r --default --reboot " + image + " 2>&1");
    INFO(own.out);
    CHECK(own.status == 1);
    CHECK(has(own.out, "is the disk the system runs from"));

    auto previous = run(wrapper + " -r --reboot " + image + " 2>&1");
    CHECK(previous.status == 2);  // only the factory default is offered

    auto least = (find_part(image, "esp").size + find_part(image, "root_a").size + find_part(image, "root_b").size +
                  find_part(image, "config").size) / MiB + 64 + 2;
    auto file = (dir.path() / "big.img").string();
    run_ok("truncate -s " + std::to_string(least + 1024) + "M " + file);
    loop_device loop(file);
    auto r = run("echo flatten | " + wrapper + " -r --default --reboot --no-act-reboot --target " + loop.path() + " " +
                 image + " 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(has(r.out, "not rebooting"));
    CHECK(has(r.out, "restore done in"));
    CHECK(find_part(loop.path(), "store").size > 1024 * MiB);
    CHECK(fs_field(loop.path(), find_part(loop.path(), "root_b"), "Filesystem volume name") == "root_b");
}
