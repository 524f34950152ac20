#!/usr/bin/env bash
# make bench-ebpf: what the heartbeat probe costs and how well it agrees with the
# kernel's socket timestamps — in one run, on one veth pair between two namespaces.
#  1. probe = "timestamping" on both nodes: heartbeat RTT (network part) without BPF;
#  2. probe = "both": the same with the tcx programs attached, and the BPF figures
#     next to the socket-timestamp figures of the same heartbeats;
#  3. a yardstick program that only counts (tests/bench/null_probe.bpf.c) joins the
#     hooks through tc, and the kernel's BPF statistics (run_time_ns / run_cnt) give
#     the cost per heartbeat of the probe and of the yardstick over the same window:
#     what any program costs per run here is mostly cold caches between heartbeats
#     and the statistics themselves;
#  4. iperf3 through the same link: the cost per packet that is not a heartbeat,
#     for the probe and for the yardstick.
set -euo pipefail
bin=$(readlink -f "${1:-build/release/bin}")
null_obj=$(readlink -f "${2:-build/release/ebpf/null_probe.bpf.o}")
window=${WINDOW:-20}
interval=${INTERVAL:-10ms}
[[ $EUID -eq 0 ]] || { echo "bench-ebpf: needs root (namespaces, BPF)"; exit 1; }
for t in iperf3 jq; do command -v $t > /dev/null || { echo "bench-ebpf: $t is missing (make bench-deps)"; exit 1; }; done
work=$(mktemp -d /tmp/tandem-ebpf-XXXXXX)
prefix="tbe$$"
a="$prefix-a"; b="$prefix-b"
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
    sysctl -qw kernel.bpf_stats_enabled="$stats_before"
    for ns in $a $b; do ip netns pids $ns 2>/dev/null | xargs -r kill -9; ip netns del $ns 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
for ns in "$a" "$b"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add eth0 netns "$a" type veth peer name eth0 netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev eth0; ip -n "$b" addr add 10.77.0.2/24 dev eth0
ip -n "$a" link set eth0 up; ip -n "$b" link set eth0 up
head -c 64 /dev/urandom > "$work/key"; chmod 600 "$work/key"

start_pair() {  # PROBE: starts alpha and beta with 10 ms heartbeats
    for n in alpha beta; do
        if [[ $n == alpha ]]; then role=primary addr=10.77.0.1 peer=beta paddr=10.77.0.2
        else role=secondary addr=10.77.0.2 peer=alpha paddr=10.77.0.1; fi
        printf '[cluster]\nname="ebpf"\nvip="10.77.0.100/24"\ninterface="eth0"\n[node]\nname="%s"\nrole="%s"\naddress="%s"\nstate_dir="%s"\n[peer]\nname="%s"\naddress="%s"\n[heartbeat]\ninterval="%s"\ntimeout="200ms"\nprobe="%s"\n[auth]\nkey_file="%s"\n[control]\nsocket="%s"\n' \
            "$n" "$role" "$addr" "$work" "$peer" "$paddr" "$interval" "$1" "$work/key" "$work/$n.sock" > "$work/$n.toml"
    done
    ip netns exec "$a" "$bin/tandemd" -c "$work/alpha.toml" 2> "$work/alpha.log" & ta=$!
    ip netns exec "$b" "$bin/tandemd" -c "$work/beta.toml" 2> "$work/beta.log" & tb=$!
    "$bin/tandemctl" -s "$work/alpha.sock" wait state=ACTIVE --timeout 10s > /dev/null
    "$bin/tandemctl" -s "$work/beta.sock" wait state=STANDBY --timeout 10s > /dev/null
}
stop_pair() { kill "$ta" "$tb"; wait "$ta" "$tb" 2> /dev/null || true; }
latency() { "$bin/tandemctl" -s "$work/$1.sock" latency --json; }
# Sum of run_cnt and run_time_ns over both nodes' programs: the probe's, or the yardstick's.
prog_stats() {
    local names='.name == "hb_ingress" or .name == "hb_egress"'
    [[ ${1:-} == null ]] && names='.name == "null_probe"'
    bpftool prog show -j | jq -r "[.[] | select($names)]
        | \"\\(map(.run_cnt // 0) | add // 0) \\(map(.run_time_ns // 0) | add // 0)\""
}
heartbeat_runs() {  # heartbeats the programs matched, both nodes, both directions
    local s=0 n
    for n in alpha beta; do s=$((s + $(latency $n | jq '.[0].tx + .[0].rx'))); done
    echo "$s"
}

echo "bench-ebpf: heartbeats every $interval, ${window} s per phase"
# 1. Without the probe.
start_pair timestamping
sleep "$window"   # the measurement window itself, not a wait for an event
ts_only=$(latency alpha | jq '.[0].network_p50_us')
stop_pair

# 2. With the probe, and the socket stamps beside it.
start_pair both
sleep "$window"
l=$(latency alpha)
bpf_net=$(jq '.[0].network_p50_us' <<< "$l"); ts_net=$(jq '.[0].timestamping.network_p50_us' <<< "$l")
bpf_p99=$(jq '.[0].network_p99_us' <<< "$l"); ts_p99=$(jq '.[0].timestamping.network_p99_us' <<< "$l")
samples=$(jq '.[0].samples' <<< "$l")

# 3. The yardstick beside the probe, heartbeats only.
for ns in "$a" "$b"; do
    ip netns exec "$ns" tc qdisc add dev eth0 clsact
    for dir in ingress egress; do ip netns exec "$ns" tc filter add dev eth0 "$dir" bpf da obj "$null_obj" sec tc; done
done
# Both measured over the same window and the same packets: the machine's noise
# (a VM's neighbours, cache pressure) hits both alike.
sysctl -qw kernel.bpf_stats_enabled=1
read -r c0 t0 < <(prog_stats); h0=$(heartbeat_runs); read -r n0 u0 < <(prog_stats null)
sleep "$window"
read -r c1 t1 < <(prog_stats); h1=$(heartbeat_runs); read -r n1 u1 < <(prog_stats null)

# 4. Other traffic through the same hooks.
ip netns exec "$b" iperf3 -s -1 -D -I "$work/iperf.pid" > /dev/null
until ip netns exec "$b" ss -ltn | grep -q ':5201'; do sleep 0.05; done
read -r c2 t2 < <(prog_stats); h2=$(heartbeat_runs); read -r n2 u2 < <(prog_stats null)
ip netns exec "$a" iperf3 -c 10.77.0.2 -t 5 -l 1400 > "$work/iperf.log"
read -r c3 t3 < <(prog_stats); h3=$(heartbeat_runs); read -r n3 u3 < <(prog_stats null)
stop_pair

awk -v c="$((c1 - c0))" -v t="$((t1 - t0))" -v h="$((h1 - h0))" \
    -v oc="$((c3 - c2))" -v ot="$((t3 - t2))" -v oh="$((h3 - h2))" \
    -v nc="$((n1 - n0))" -v nt="$((u1 - u0))" -v noc="$((n3 - n2))" -v not="$((u3 - u2))" \
    -v ts_only="$ts_only" -v bpf="$bpf_net" -v ts="$ts_net" \
    -v bpf99="$bpf_p99" -v ts99="$ts_p99" -v samples="$samples" 'BEGIN {
    hb = c > 0 ? t / c : 0                       # heartbeats are nearly every packet here
    other = (oc - oh) > 0 ? (ot - oh * hb) / (oc - oh) : 0
    floor = nc > 0 ? nt / nc : 0                 # the yardstick on the same idle link
    nother = noc > 0 ? not / noc : 0
    printf "\n%-56s %10s %10s %10s %8s\n", "BPF cost per run (run_time_ns / run_cnt)", "probe", "yardstick", "probe-yard", "goal"
    printf "%-56s %7.0f ns %7.0f ns %7.0f ns %5d ns\n", "  heartbeat packet (" c " runs, " h " heartbeats)", hb, floor, hb - floor, 500
    printf "%-56s %7.1f ns %7.1f ns %7.1f ns %5d ns\n", "  other packet (iperf3, " oc - oh " runs)", other, nother, other - nother, 100
    printf "%-56s %10.2f %10s %10.2f\n", "  heartbeat: ratio to the 500 ns goal", hb / 500, "", (hb - floor) / 500
    printf "%-56s %10.2f %10s %10.2f\n", "  other: ratio to the 100 ns goal", other / 100, "", (other - nother) / 100
    printf "\n%-52s %12s\n", "heartbeat RTT, network part, median", ""
    printf "%-52s %9.1f us\n", "  socket timestamps, no probe attached", ts_only
    printf "%-52s %9.1f us   (with / without: %.2f)\n", "  socket timestamps, probe attached", ts, (ts_only > 0 ? ts / ts_only : 0)
    printf "%-52s %9.1f us\n", "  BPF probe", bpf
    printf "%-52s %9.1f us   (p99: BPF %.1f, timestamps %.1f)\n", "  BPF - socket timestamps (" samples " samples)", bpf - ts, bpf99, ts99
}'
