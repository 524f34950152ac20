#!/usr/bin/env bash
# make bench-store: fio through the live /store front end (FUSE + loop), side by side in one run:
#   replicated   - the primary's volume with its peer connected over a veth (protocol C)
#   unreplicated - the same front end after the peer is gone (writes only mark the bitmap)
#   raw          - the backing device itself (a loop device over a tmpfs file), no Tandem
# Jobs: 1 MiB sequential write (QD8), 4 KiB random write at QD1 and QD32, 5 s each.
# Goals: replicated >= 0.8 x unreplicated throughput; QD1 4 KiB latency <=
# unreplicated + network RTT + 20 us.
# ROUNDS (3) rounds of all three, each with a new engine pair; the tables give
# the median of the rounds, since one round on 2 shared cores varies by a
# quarter from the next (QD1 latency seen at 155 and 203 us with nothing changed).
set -euo pipefail
# shellcheck source=lib/stats.sh
source "$(dirname "$(readlink -f "$0")")/lib/stats.sh"
bin=$(readlink -f "${1:-build/release/bin}")
seconds=${SECONDS_PER_JOB:-5}
rounds=${ROUNDS:-3}
[[ $EUID -eq 0 ]] || { echo "bench-store: needs root (namespaces, loop devices, FUSE)"; exit 1; }
command -v fio > /dev/null || { echo "bench-store: fio is missing (make bench-deps)"; exit 1; }
prefix="tbs$$"; a="$prefix-a"; b="$prefix-b"
work=$(mktemp -d /tmp/tandem-bench-store-XXXXXX)
src_dev=""; dst_dev=""
cleanup() {
    for ns in "$a" "$b"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9; ip netns del "$ns" 2>/dev/null || true; done
    [[ -n $src_dev ]] && losetup -d "$src_dev" 2>/dev/null || true
    [[ -n $dst_dev ]] && losetup -d "$dst_dev" 2>/dev/null || true
    umount -l "$work/fuse" 2>/dev/null || true  # left mounted when the bench dies
    rm -f "/dev/shm/$prefix-src" "/dev/shm/$prefix-dst"
    rm -rf "$work"
}
trap cleanup EXIT
for ns in "$a" "$b"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add eth1 netns "$a" type veth peer name eth1 netns "$b"
ip -n "$a" addr add 10.88.0.1/24 dev eth1; ip -n "$b" addr add 10.88.0.2/24 dev eth1
ip -n "$a" link set eth1 up; ip -n "$b" link set eth1 up
truncate -s 1G "/dev/shm/$prefix-src" "/dev/shm/$prefix-dst"
src_dev=$(losetup -f --show "/dev/shm/$prefix-src"); dst_dev=$(losetup -f --show "/dev/shm/$prefix-dst")

# run.sh DEV LABEL: the three fio jobs, one result line each:
#   label job KiB/s IOPS mean-latency-us busy-cores
# busy-cores: the machine's CPU time used during the job (all processes, kernel
# included: both nodes share these cores) per second, from /proc/stat.
cat > "$work/run.sh" <<SH
#!/bin/sh
set -e
busy() { awk '/^cpu / { print \$2 + \$3 + \$4 + \$7 + \$8, \$2 + \$3 + \$4 + \$5 + \$6 + \$7 + \$8 }' /proc/stat; }
job() {
    b0=\$(busy)
    r=\$(fio --name="\$3" --filename="\$1" --size=512M --direct=1 --ioengine=libaio --rw="\$4" --bs="\$5" \
        --iodepth="\$6" --runtime=$seconds --time_based --minimal 2>/dev/null)
    b1=\$(busy)
    echo "\$r" | awk -F';' -v l="\$2" -v j="\$3" -v b0="\$b0" -v b1="\$b1" -v n="\$(nproc)" '{
        split(b0, x, " "); split(b1, y, " ")
        print l, j, \$48, \$49, \$81, (y[1] - x[1]) / (y[2] - x[2]) * n }' >> "$work/results"
}
job "\$1" "\$2" seq-1m write 1M 8
job "\$1" "\$2" rand-4k-qd1 randwrite 4k 1
job "\$1" "\$2" rand-4k-qd32 randwrite 4k 32
SH
chmod +x "$work/run.sh"

echo "bench-store: 1 GiB volumes over /dev/shm, peer over a veth, fio $seconds s per job, $rounds rounds (medians)"
for i in $(seq "$rounds"); do
    ip netns exec "$a" ping -c 50 -i 0.01 -q 10.88.0.2 | awk -F'/' '/^rtt/ { print $5 * 1000 }' > "$work/rtt.$i"
    mkdir "$work/r$i"
    "$bin/tandem-repl-bench" --source "$src_dev" --target "$dst_dev" --ns-source "$a" --ns-target "$b" \
        --addr-source 10.88.0.1 --addr 10.88.0.2 --meta-dir "$work/r$i" --store-run "$work/run.sh" > "$work/bench.log" ||
        { cat "$work/bench.log"; exit 1; }
    "$work/run.sh" "$src_dev" raw
    mv "$work/results" "$work/results.$i"
    awk '$2 == "rand-4k-qd1" { l[$1] = $5 } $2 == "seq-1m" { s[$1] = $3 } END {
        printf "  round %d: seq-1m replicated %.0f MiB/s; qd1 latency replicated %.1f us, unreplicated %.1f us\n",
               r, s["peer"] / 1024, l["peer"], l["alone"] }' r="$i" "$work/results.$i"
done

rtt=$(cat "$work"/rtt.* | median)
# r LABEL JOB FIELD: the median over the rounds.
r() { cat "$work"/results.* | awk -v l="$1" -v j="$2" -v f="$3" '$1 == l && $2 == j { print $f }' | median; }
printf '\n%-14s %14s %14s %14s\n' "" replicated unreplicated raw
for j in seq-1m rand-4k-qd1 rand-4k-qd32; do
    if [[ $j == seq-1m ]]; then f=3; unit="MiB/s"; else f=4; unit="IOPS"; fi
    printf '%-14s' "$j"
    for l in peer alone raw; do
        v=$(r "$l" "$j" "$f"); [[ $f == 3 ]] && v=$(awk -v v="$v" 'BEGIN { printf "%.0f", v / 1024 }')
        printf ' %8s %-5s' "$v" "$unit"
    done
    echo
done
printf '%-14s' "qd1 latency"
for l in peer alone raw; do printf ' %8.1f us   ' "$(r "$l" rand-4k-qd1 5)"; done
echo
echo "busy cores (of $(nproc)), and CPU seconds per GiB written:"
for j in seq-1m rand-4k-qd1 rand-4k-qd32; do
    printf '%-14s' "$j"
    for l in peer alone raw; do
        printf ' %4.2f %6.2f s  ' "$(r "$l" "$j" 6)" "$(awk -v c="$(r "$l" "$j" 6)" -v k="$(r "$l" "$j" 3)" 'BEGIN { print c / (k / 1048576) }')"
    done
    echo
done
echo
for j in seq-1m rand-4k-qd32; do
    f=$([[ $j == seq-1m ]] && echo 3 || echo 4)
    awk -v p="$(r peer "$j" $f)" -v a="$(r alone "$j" $f)" -v w="$(r raw "$j" $f)" -v j="$j" \
        'BEGIN { printf "%-14s replicated / unreplicated %.2f (goal >= 0.80); unreplicated / raw %.2f\n", j, p / a, a / w }'
done
awk -v p="$(r peer rand-4k-qd1 5)" -v a="$(r alone rand-4k-qd1 5)" -v rtt="$rtt" \
    'BEGIN { printf "qd1 latency    replicated %.1f us vs unreplicated %.1f + RTT %.1f + 20 = %.1f us: %s\n", p, a, rtt, a + rtt + 20, p <= a + rtt + 20 ? "met" : "NOT met" }'
echo "(medians of $rounds rounds; RTT: ping's mean over 50 pings at 10 ms, median of the rounds)"
