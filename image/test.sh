#!/usr/bin/env bash
# make image-test: boots the image in qemu and passes when the serial console
# shows the self-test line "TANDEM-SELFTEST PASS: <cstate>" (tandemd ACTIVE);
# the guest powers itself off. KVM only when a probe boot works; else software
# emulation (TCG). A copy of the disk is booted: the built image stays pristine.
#   image/test.sh OUT_DIR [TIMEOUT_S]
set -euo pipefail
out=$(readlink -f "${1:?OUT_DIR}")
limit=${2:-600}
(cd "$out" && sha256sum --quiet -c SHA256SUMS) || { echo "image-test: checksums do not match SHA256SUMS"; exit 1; }
work=$(mktemp -d /tmp/tandem-image-test-XXXXXX)
trap 'cp "$work/serial.log" "$out/serial.log" 2>/dev/null; rm -rf "$work"' EXIT
cp --sparse=always "$out/disk.img" "$work/disk.img"
accel=tcg
if [[ -w /dev/kvm ]] && timeout 20 qemu-system-x86_64 -accel kvm -machine q35 -m 64 -nographic -no-reboot \
        -kernel /dev/null > /dev/null 2>&1; then accel=kvm; fi
[[ $accel == kvm ]] || echo "image-test: no usable KVM here: software emulation (slow)"
start=$(date +%s)
timeout "$limit" qemu-system-x86_64 -accel "$accel" -machine q35 -cpu max -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
    -append "root=PARTLABEL=root_a rw console=ttyS0 net.ifnames=0 tandem.selftest" \
    -drive "file=$work/disk.img,format=raw,if=virtio" -nic user,model=virtio-net-pci \
    > "$work/serial.log" 2>&1 || true
secs=$(( $(date +%s) - start ))
line=$(grep -a -m1 'TANDEM-SELFTEST' "$work/serial.log" || true)
if [[ $line == *"TANDEM-SELFTEST PASS"* ]]; then
    echo "image-test: passed in ${secs} s ($accel): ${line#*: }"
    exit 0
fi
echo "image-test: FAILED after ${secs} s ($accel); the console's last lines:"
tail -40 "$work/serial.log"
exit 1
