#!/usr/bin/env bash
# make image-test: boots the image in qemu as firmware boots a disk (UEFI: OVMF,
# then the ESP's GRUB, then the slot's kernel) and passes when the serial console
# shows the self-test line "TANDEM-SELFTEST PASS: <cstate>" (tandemd ACTIVE);
# the guest powers itself off. KVM only when a probe boot works; else software
# emulation (TCG). A copy of the disk is booted: the built image stays pristine.
#   image/test.sh OUT_DIR [TIMEOUT_S]
# Another disk and OS slot (the recovery tests boot what tandem-recovery wrote):
#   DISK=/path/disk.img ROOT=root_b image/test.sh OUT_DIR [TIMEOUT_S]
# DISK is booted in place (it is the caller's copy) and its console is saved
# beside it as serial.log. The slot and the self-test flag go into the booted
# disk's /tandem/boot.cfg on its ESP, which the boot menu reads.
set -euo pipefail
export MTOOLS_SKIP_CHECK=1  # mtools on a partition inside a disk file
out=$(readlink -f "${1:?OUT_DIR}")
limit=${2:-600}
root=${ROOT:-root_a}
[[ $root =~ ^[A-Za-z0-9_-]+$ ]] || { echo "image-test: ROOT=$root is not a partition name (root_a, root_b)"; exit 2; }
disk=${DISK:+$(readlink -f "$DISK")}
[[ $disk == "$out/disk.img" ]] && disk=
if [[ -n $disk ]]; then
    [[ -f $disk ]] || { echo "image-test: DISK=$DISK is not a file"; exit 2; }
    log=$(dirname "$disk")/serial.log
else
    (cd "$out" && sha256sum --quiet -c SHA256SUMS) || { echo "image-test: checksums do not match SHA256SUMS"; exit 1; }
    log=$out/serial.log
fi
work=$(mktemp -d /tmp/tandem-image-test-XXXXXX)
trap 'cp "$work/serial.log" "$log" 2>/dev/null; rm -rf "$work"' EXIT
if [[ -z $disk ]]; then
    disk=$work/disk.img
    cp --sparse=always "$out/disk.img" "$disk"
fi
esp=$(sfdisk -d "$disk" | awk -F'start= *' '/name="esp"/ {split($2, a, ","); print a[1]}')
[[ -n $esp ]] || { echo "image-test: $disk has no GPT partition named esp: nothing to boot from"; exit 1; }
printf 'set slot=%s\nset extra="tandem.selftest"\n' "$root" > "$work/boot.cfg"
mcopy -o -i "$disk@@$((esp * 512))" "$work/boot.cfg" ::/tandem/boot.cfg ||
    { echo "image-test: cannot write /tandem/boot.cfg on $disk's ESP"; exit 1; }
accel=tcg
if [[ -w /dev/kvm ]] && timeout 20 qemu-system-x86_64 -accel kvm -machine q35 -m 64 -nographic -no-reboot \
        -kernel /dev/null > /dev/null 2>&1; then accel=kvm; fi
[[ $accel == kvm ]] || echo "image-test: no usable KVM here: software emulation (slow)"
start=$(date +%s)
timeout "$limit" qemu-system-x86_64 -accel "$accel" -machine q35 -cpu max -smp 2 -m 1024 -nographic -no-reboot \
    -bios /usr/share/ovmf/OVMF.fd < /dev/null \
    -drive "file=$disk,format=raw,if=virtio" -netdev user,id=mgmt -device virtio-net-pci,netdev=mgmt,addr=03 \
    > "$work/serial.log" 2>&1 || true
secs=$(( $(date +%s) - start ))
line=$(grep -a -m1 'TANDEM-SELFTEST' "$work/serial.log" || true)
if [[ $line == *"TANDEM-SELFTEST PASS"* ]]; then
    echo "image-test: passed in ${secs} s ($accel, root=PARTLABEL=$root): ${line#*: }"
    exit 0
fi
echo "image-test: FAILED after ${secs} s ($accel); the console's last lines:"
tail -40 "$work/serial.log"
exit 1
