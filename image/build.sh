#!/usr/bin/env bash
# make image: a Debian 12 appliance disk with Tandem installed.
#   image/build.sh BIN_DIR OUT_DIR
# GPT, partitions found by label: root_a and root_b (the two OS slots), config
# (/etc/tandem), store (/store: never in fstab, Tandem mounts it). The root file
# system comes from mmdebstrap and is cached by the hash of its package list, so
# a rebuild only reassembles. Writes OUT_DIR/disk.img, vmlinuz, initrd.img and
# SHA256SUMS. Everything happens in files: no loop device, no host disk.
set -euo pipefail
bin=$(readlink -f "${1:?BIN_DIR}")
out=$(readlink -f "${2:?OUT_DIR}")
here=$(dirname "$(readlink -f "$0")")
[[ $EUID -eq 0 ]] || { echo "image: needs root (mmdebstrap, file ownership in the image)"; exit 1; }

mapfile -t pkgs < <(grep -v '^\s*#' "$here/packages.txt" | awk 'NF{print $1}')
key=$(printf '%s\n' "${pkgs[@]}" | sha256sum | cut -c1-16)
cache=$out/cache
rootfs=$cache/rootfs-$key.tar
mkdir -p "$cache"
if [[ ! -s $rootfs ]]; then
    echo "image: building the root file system (mmdebstrap, Debian 12, ${#pkgs[@]} packages)"
    mmdebstrap --variant=minbase --format=tar --include="$(IFS=,; echo "${pkgs[*]}")" bookworm "$rootfs.tmp" \
        http://deb.debian.org/debian > "$cache/mmdebstrap.log" 2>&1 ||
        { tail -20 "$cache/mmdebstrap.log"; exit 1; }
    mv "$rootfs.tmp" "$rootfs"
else
    echo "image: root file system from the cache ($rootfs)"
fi

stage=$(mktemp -d "$out/stage-XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/root" "$stage/config"
tar -xf "$rootfs" -C "$stage/root"

# Tandem itself, its unit, and the appliance's settings.
install -m 0755 "$bin/tandemd" "$bin/tandemctl" "$stage/root/usr/sbin/"
install -m 0644 "$here/systemd/tandemd.service" "$stage/root/etc/systemd/system/"
install -m 0644 "$here/systemd/tandem-selftest.service" "$stage/root/etc/systemd/system/"
ln -sf /etc/systemd/system/tandemd.service "$stage/root/etc/systemd/system/multi-user.target.wants/tandemd.service"
ln -sf /etc/systemd/system/tandem-selftest.service \
    "$stage/root/etc/systemd/system/multi-user.target.wants/tandem-selftest.service"
ln -sf /lib/systemd/system/systemd-networkd.service \
    "$stage/root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
echo appliance > "$stage/root/etc/hostname"
cat > "$stage/root/etc/fstab" <<'EOF'
# Partitions by label. /store is not here: Tandem mounts it on the active node only.
PARTLABEL=root_a  /            ext4  errors=remount-ro  0 1
PARTLABEL=config  /etc/tandem  ext4  defaults,nofail    0 2
EOF
mkdir -p "$stage/root/etc/tandem" "$stage/root/store" "$stage/root/var/lib/tandem"
printf 'root:tandem\n' | chroot "$stage/root" chpasswd
# The management link: eth0 (net.ifnames=0 on the kernel command line). Its
# address is on the root file system: systemd-networkd starts before the config
# partition is mounted.
install -m 0644 "$here/config/eth0.network" "$stage/root/etc/systemd/network/10-eth0.network"

# The config partition: a sample cluster for the self-test (replaced on a real appliance).
head -c 64 /dev/urandom > "$stage/config/cluster.key"
chmod 600 "$stage/config/cluster.key"
cp "$here/config/tandem.toml" "$stage/config/"

# Kernel and initramfs for qemu's direct boot.
cp "$(ls "$stage"/root/boot/vmlinuz-* | head -1)" "$out/vmlinuz"
cp "$(ls "$stage"/root/boot/initrd.img-* | head -1)" "$out/initrd.img"

# File systems as files, then the disk.
mkfs.ext4 -q -F -E root_owner=0:0 -L root_a -d "$stage/root" "$out/root_a.img" 1400M
mkfs.ext4 -q -F -E root_owner=0:0 -L root_b "$out/root_b.img" 1400M
mkfs.ext4 -q -F -E root_owner=0:0 -L config -d "$stage/config" "$out/config.img" 64M
rm -f "$out/disk.img"
truncate -s 3600M "$out/disk.img"
sfdisk -q "$out/disk.img" <<'EOF'
label: gpt
size=1400MiB, name=root_a
size=1400MiB, name=root_b
size=64MiB, name=config
name=store
EOF
starts=($(sfdisk -d "$out/disk.img" | awk -F'start= *' '/start=/ {split($2, a, ","); print a[1]}'))
for i in 0 1 2; do
    part=$(echo root_a root_b config | cut -d' ' -f$((i + 1)))
    dd if="$out/$part.img" of="$out/disk.img" bs=1M seek=$((starts[i] / 2048)) conv=notrunc,sparse status=none
    rm -f "$out/$part.img"
done
(cd "$out" && sha256sum disk.img vmlinuz initrd.img > SHA256SUMS)
echo "image: $out/disk.img ($(du -h --apparent-size "$out/disk.img" | cut -f1), $(du -h "$out/disk.img" | cut -f1) used)"
