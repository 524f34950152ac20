#!/usr/bin/env bash
# make bench-replication: the replication pump against iperf3 on the same veth, in one run.
#   (a) full sync, rate unlimited, of a memory-backed volume (a loop device over a
#       tmpfs file; the machine has no brd), between two namespaces, vs iperf3's
#       single-stream TCP throughput on the same veth: median of RUNS (5), ratio;
#   (b) rate-limit accuracy at 100, 400 and 1100 MB/s (MiB/s, the seeds' unit);
#   (c) delta resync by the engine after 1 % of the volume changed in random 4 KiB
#       blocks while the peer was away: bytes sent / bytes changed, time vs full sync;
#   (d) application writes through the engine's API, protocol C with the peer vs
#       the same writes without a peer (1 MiB sequential and 4 KiB random, QD1);
#   (e) CPU seconds per GB, both ends together: the whole machine's busy time
#       (/proc/stat, so the loop devices' kworkers and softirqs count) for the
#       pump and for iperf3, and the pump's own process (both pumps run in it).
#   (f) application writes (1 MiB sequential, 4 KiB random) during a resync: the
#       resync yielding to them (resync_yield_rate, 20 MiB/s), the yield off, and
#       no resync at all.
set -euo pipefail
# shellcheck source=lib/stats.sh
source "$(dirname "$(readlink -f "$0")")/lib/stats.sh"
bin=$(readlink -f "${1:-build/release/bin}")
size_mib=${SIZE_MIB:-4096}
[[ $EUID -eq 0 ]] || { echo "bench-replication: needs root (namespaces, loop devices)"; exit 1; }
command -v iperf3 > /dev/null || { echo "bench-replication: iperf3 is missing (make bench-deps)"; exit 1; }
prefix="tbr$$"; a="$prefix-a"; b="$prefix-b"
scratch=$(mktemp -d /tmp/tandem-bench-repl-XXXXXX)  # per-run figures: never in the work tree
src_file=/dev/shm/$prefix-src; dst_file=/dev/shm/$prefix-dst
src_dev=""; dst_dev=""
cleanup() {
    for ns in "$a" "$b"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9; ip netns del "$ns" 2>/dev/null || true; done
    [[ -n $src_dev ]] && losetup -d "$src_dev" 2>/dev/null || true
    [[ -n $dst_dev ]] && losetup -d "$dst_dev" 2>/dev/null || true
    rm -f "$src_file" "$dst_file"
    rm -rf "$scratch"
}
trap cleanup EXIT
for ns in "$a" "$b"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add eth1 netns "$a" type veth peer name eth1 netns "$b"
ip -n "$a" addr add 10.88.0.1/24 dev eth1; ip -n "$b" addr add 10.88.0.2/24 dev eth1
ip -n "$a" link set eth1 up; ip -n "$b" link set eth1 up

# The target is written once, with zeros, before anything is timed: the first
# write of a tmpfs page pays for its allocation and clearing (an fallocate'd page
# is cleared on first use too), which a real disk does not have. It made the
# first timed run a quarter of the speed of the others.
truncate -s "${size_mib}M" "$src_file" "$dst_file"
src_dev=$(losetup -f --show "$src_file"); dst_dev=$(losetup -f --show "$dst_file")
echo "filling a ${size_mib} MiB source volume ($src_dev over tmpfs) with pseudo-random data, the target with zeros"
"$bin/tandem-repl-bench" --fill --source "$src_dev"
dd if=/dev/zero of="$dst_dev" bs=1M count="$size_mib" oflag=direct status=none

field() { sed -n "s/.*\"$1\":\\([0-9.]*\\).*/\\1/p"; }
pump() { "$bin/tandem-repl-bench" --source "$src_dev" --target "$dst_dev" --ns-source "$a" --ns-target "$b" "$@"; }

runs=${RUNS:-5}
echo; echo "(a) full sync vs iperf3, single TCP stream on the same veth, $runs runs each"
: > "$scratch/pump"; : > "$scratch/iperf"; : > "$scratch/cpu"; : > "$scratch/zc"; : > "$scratch/ratio"
: > "$scratch/sys-pump"; : > "$scratch/sys-iperf"
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # user nice system irq softirq
per_gb() { awk -v t="$(($2 - $1))" -v hz="$hz" -v n="$3" 'BEGIN { printf "%.3f\n", t / hz / (n / 1e9) }'; }
iperf() {  # [quiet]: a warm-up, nothing recorded
    ip netns exec "$b" iperf3 -s -1 -B 10.88.0.2 > /dev/null 2>&1 &
    for _ in $(seq 50); do ip netns exec "$b" ss -ltn | grep -q ':5201' && break; sleep 0.05; done
    local b0; b0=$(busy)
    ip netns exec "$a" iperf3 -c 10.88.0.2 -t 4 -J > "$scratch/json"
    local b1; b1=$(busy)
    wait
    [[ -z ${1:-} ]] || return 0
    # iperf3 reports bits per second (decimal); convert to MiB/s to compare.
    awk '/"sum_received"/ {f=1} f && /"bits_per_second"/ {gsub(/[^0-9.e+]/, "", $2); printf "%.1f\n", $2 / 8 / 1048576; exit}' "$scratch/json" >> "$scratch/iperf"
    per_gb "$b0" "$b1" "$(awk '/"sum_received"/ {f=1} f && /"bytes"/ {gsub(/[^0-9]/, "", $2); print $2; exit}' "$scratch/json")" >> "$scratch/sys-iperf"
}
copying() {
    local b0; b0=$(busy)
    out=$(pump)
    local b1; b1=$(busy)
    echo "$out" | field mib_per_s >> "$scratch/pump"
    echo "$out" | field cpu_s_per_gb >> "$scratch/cpu"
    per_gb "$b0" "$b1" "$(echo "$out" | field bytes)" >> "$scratch/sys-pump"
}
# A warm-up of each, not recorded: the first bulk transfer in the new
# namespaces was a fifth slower than the ones after it, whichever tool ran it
# (pump: 1686 MiB/s, then 2348 to 2565).
pump > /dev/null; iperf quiet
# The two take turns at going first: whichever runs right after the other was
# slower on this machine, by up to a fifth, so a fixed order would favour one.
for i in $(seq "$runs"); do
    if (( i % 2 )); then copying; iperf; else iperf; copying; fi
    pump --zero-copy | field mib_per_s >> "$scratch/zc"
    p=$(tail -1 "$scratch/pump"); q=$(tail -1 "$scratch/iperf")
    awk -v p="$p" -v q="$q" -v i="$i" -v z="$(tail -1 "$scratch/zc")" -v first="$( (( i % 2 )) && echo pump || echo iperf3)" \
        'BEGIN { printf "  run %d (%s first): pump %.1f MiB/s, iperf3 %.1f MiB/s, ratio %.2f; zero-copy send %.1f MiB/s\n", i, first, p, q, p / q, z }'
    awk -v p="$p" -v q="$q" 'BEGIN { print p / q }' >> "$scratch/ratio"
done
if cmp -s <(head -c 64M "$src_dev") <(head -c 64M "$dst_dev") && cmp -s "$src_dev" "$dst_dev"; then
    echo "  target identical to source: yes"
else
    echo "  target identical to source: NO"; exit 1
fi
p=$(median < "$scratch/pump"); q=$(median < "$scratch/iperf"); c=$(median < "$scratch/cpu"); z=$(median < "$scratch/zc")
sp=$(median < "$scratch/sys-pump"); si=$(median < "$scratch/sys-iperf")
awk -v p="$p" -v q="$q" -v r="$(median < "$scratch/ratio")" \
    'BEGIN { printf "  median: pump %.1f MiB/s, iperf3 %.1f MiB/s, ratio %.2f (goal >= 0.95); median of the per-run ratios %.2f\n", p, q, p / q, r }'
awk -v z="$z" -v p="$p" -v q="$q" 'BEGIN { printf "  zero-copy send: median %.1f MiB/s, %.2f x the copying pump, ratio to iperf3 %.2f\n", z, z / p, z / q }'
awk -v sp="$sp" -v si="$si" -v c="$c" \
    'BEGIN { printf "  (e) CPU, both ends, whole machine: pump %.3f s per GB, iperf3 %.3f (ratio %.2f); the pump'"'"'s process alone %.3f\n", sp, si, sp / si, c }'

echo; echo "(b) rate-limit accuracy (3 s of data at each rate)"
for rate in 100 400 1100; do
    bytes=$((rate * 3 * 1048576)); (( bytes > size_mib * 1048576 )) && bytes=$((size_mib * 1048576))
    got=$(pump --rate "$rate" --bytes "$bytes" | field mib_per_s)
    awk -v r="$rate" -v g="$got" 'BEGIN { printf "  %5d MiB/s: achieved %7.1f MiB/s (%+.1f %%; goal within +-3 %%)\n", r, g, (g - r) / r * 100 }'
done

echo; echo "(c) delta resync and (d) replicated writes, two engines in the two namespaces"
meta=$(mktemp -d /tmp/tbr-meta-XXXXXX)
out=$("$bin/tandem-repl-bench" --engine --source "$src_dev" --target "$dst_dev" --ns-source "$a" --ns-target "$b" \
      --addr-source 10.88.0.1 --addr 10.88.0.2 --meta-dir "$meta" --seconds 3)
rm -rf "$meta"
v() { echo "$out" | field "$1"; }
awk -v c="$(v delta_changed_bytes)" -v s="$(v delta_sent_bytes)" -v r="$(v delta_ratio)" -v t="$(v delta_s)" -v f="$(v full_sync_s)" \
    'BEGIN { printf "  (c) changed %.1f MiB, sent %.1f MiB: ratio %.3f (goal <= 1.05); delta resync %.2f s vs full sync %.2f s (%.1f %%)\n", c/1048576, s/1048576, r, t, f, t/f*100 }'
awk -v p="$(v seq_mib_s_peer)" -v a="$(v seq_mib_s_alone)" \
    'BEGIN { printf "  (d) 1 MiB sequential: %.1f MiB/s with the peer (protocol C), %.1f MiB/s alone: ratio %.2f\n", p, a, p/a }'
awk -v p="$(v rnd_iops_peer)" -v a="$(v rnd_iops_alone)" -v lp="$(v rnd_us_peer)" -v la="$(v rnd_us_alone)" \
    'BEGIN { printf "      4 KiB random QD1: %.0f IOPS (%.1f us) with the peer, %.0f IOPS (%.1f us) alone: ratio %.2f\n", p, lp, a, la, p/a }'
echo "  (f) application writes, one at a time, during a resync of the whole volume (mean of 2 rounds each):"
for m in yield:"the resync yielding (20 MiB/s)" noyield:"the yield off" away:"no resync (peer away)"; do
    awk -v s="$(v "during_seq_${m%%:*}")" -v u="$(v "during_us_${m%%:*}")" -v r="$(v "during_resync_${m%%:*}")" -v what="${m#*:}" \
        'BEGIN { printf "      %-32s 1 MiB sequential %7.1f MiB/s, 4 KiB random %6.1f us%s\n", what ":", s, u, r == "" ? "" : sprintf("; the resync meanwhile %.1f MiB/s", r) }'
done
