#!/usr/bin/env bash
# make image: a Debian 12 appliance disk with Tandem installed.
#   image/build.sh BIN_DIR OUT_DIR
# GPT, partitions found by label: esp (UEFI boot), root_a and root_b (the two OS
# slots), config (/etc/tandem), store (/store: never in fstab, Tandem mounts
# it). The root file system comes from mmdebstrap and is cached by the hash of
# its package list, so a rebuild only reassembles. Writes OUT_DIR/disk.img, vmlinuz, initrd.img and
# SHA256SUMS. Everything happens in files: no loop device, no host disk.
set -euo pipefail
export MTOOLS_SKIP_CHECK=1  # mtools on a partition inside a disk file
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

# Tandem itself, its units, and the appliance's settings.
install -m 0755 "$bin/tandemd" "$bin/tandemctl" "$stage/root/usr/sbin/"
install -D -m 0755 "$here/hatest.sh" "$stage/root/usr/lib/tandem/hatest"
# The recovery tool beside its recovery.py wrapper (which loads it from its own directory).
install -m 0755 "$here/recovery/tandem-recovery" "$here/recovery/recovery.py" "$stage/root/usr/lib/tandem/"
ln -sf /usr/lib/tandem/tandem-recovery "$stage/root/usr/sbin/tandem-recovery"
wants=$stage/root/etc/systemd/system/multi-user.target.wants
for unit in tandemd tandem-selftest tandem-hatest; do
    install -m 0644 "$here/systemd/$unit.service" "$stage/root/etc/systemd/system/"
    ln -sf "/etc/systemd/system/$unit.service" "$wants/$unit.service"
done
ln -sf /lib/systemd/system/systemd-networkd.service "$wants/systemd-networkd.service"
echo appliance > "$stage/root/etc/hostname"
cat > "$stage/root/etc/fstab" <<'EOF'
# Partitions by label. / is the slot the kernel command line names (root=PARTLABEL=root_a
# or root_b, rw). /store is not here: Tandem mounts it on the active node only.
PARTLABEL=config  /etc/tandem  ext4  defaults,nofail    0 2
EOF
mkdir -p "$stage/root/etc/tandem" "$stage/root/store" "$stage/root/var/lib/tandem"
printf 'root:tandem\n' | chroot "$stage/root" chpasswd
# Interface names pinned by PCI slot: eth0 management, eth1 crossover. The
# links' addresses are node settings, on the config partition: networkd waits
# for it and reads them through links.
install -m 0644 "$here/systemd/mgmt.link" "$stage/root/etc/systemd/network/10-mgmt.link"
install -m 0644 "$here/systemd/crossover.link" "$stage/root/etc/systemd/network/10-crossover.link"
install -D -m 0644 "$here/systemd/networkd-config.conf" \
    "$stage/root/etc/systemd/system/systemd-networkd.service.d/tandem-config.conf"
for link in eth0 eth1; do
    ln -sf "/etc/tandem/network/$link.network" "$stage/root/etc/systemd/network/20-$link.network"
done

# The config partition: a sample cluster for the self-test (replaced on a real appliance).
head -c 64 /dev/urandom > "$stage/config/cluster.key"
chmod 600 "$stage/config/cluster.key"
cp -r "$here/config/." "$stage/config/"

# The boot path (UEFI): firmware -> EFI/BOOT/BOOTX64.EFI on the ESP, GRUB as
# one binary with its menu inside (image/boot/grub.cfg) -> /boot/vmlinuz and
# /boot/initrd.img of the slot /tandem/boot.cfg names. Each slot carries its
# own kernel, so a reinstalled slot boots the kernel it came with.
vmlinuz=$(basename "$(ls "$stage"/root/boot/vmlinuz-* | head -1)")
initrd=$(basename "$(ls "$stage"/root/boot/initrd.img-* | head -1)")
ln -sf "$vmlinuz" "$stage/root/boot/vmlinuz"
ln -sf "$initrd" "$stage/root/boot/initrd.img"
grub-mkstandalone -O x86_64-efi --locales= --themes= --fonts= -o "$stage/BOOTX64.EFI" \
    "boot/grub/grub.cfg=$here/boot/grub.cfg"
rm -f "$out/esp.img"
truncate -s 64M "$out/esp.img"
mkfs.vfat -n ESP "$out/esp.img" > /dev/null
mmd -i "$out/esp.img" ::/EFI ::/EFI/BOOT ::/tandem
mcopy -i "$out/esp.img" "$stage/BOOTX64.EFI" ::/EFI/BOOT/
mcopy -i "$out/esp.img" "$here/boot/boot.cfg" ::/tandem/
# The same kernel and initramfs for qemu's direct boot (-kernel), which the
# two-guest test uses to give each boot its own kernel command line.
cp "$stage/root/boot/$vmlinuz" "$out/vmlinuz"
cp "$stage/root/boot/$initrd" "$out/initrd.img"

# File systems as files, then the disk.
mkfs.ext4 -q -F -E root_owner=0:0 -L root_a -d "$stage/root" "$out/root_a.img" 1400M
mkfs.ext4 -q -F -E root_owner=0:0 -L root_b "$out/root_b.img" 1400M
mkfs.ext4 -q -F -E root_owner=0:0 -L config -d "$stage/config" "$out/config.img" 64M
rm -f "$out/disk.img"
truncate -s 3264M "$out/disk.img"
sfdisk -q "$out/disk.img" <<'EOF'
label: gpt
size=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=1400MiB, name=root_a
size=1400MiB, name=root_b
size=64MiB, name=config
name=store
EOF
parts=(esp root_a root_b config)
starts=($(sfdisk -d "$out/disk.img" | awk -F'start= *' '/start=/ {split($2, a, ","); print a[1]}'))
for i in "${!parts[@]}"; do
    dd if="$out/${parts[i]}.img" of="$out/disk.img" bs=1M seek=$((starts[i] / 2048)) conv=notrunc,sparse status=none
    rm -f "$out/${parts[i]}.img"
done
(cd "$out" && sha256sum disk.img vmlinuz initrd.img > SHA256SUMS)
echo "image: $out/disk.img ($(du -h --apparent-size "$out/disk.img" | cut -f1), $(du -h "$out/disk.img" | cut -f1) used)"
