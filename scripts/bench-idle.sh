#!/usr/bin/env bash
# make bench-idle: CPU and memory of an idle, healthy pair — Tandem vs keepalived, in one run.
# Both at 1 s heartbeats/adverts on the same two-namespace topology, and like
# for like: Tandem runs no connectivity test here, since keepalived has none. CPU is the
# time on CPU over the window, in nanoseconds from every thread's
# /proc/PID/task/TID/schedstat (the 10 ms ticks of /proc/PID/stat are too coarse
# for an idle daemon), RSS is VmRSS at
# the end, summed over each daemon's processes (keepalived runs a parent and a
# VRRP child).
set -euo pipefail
bin=$(readlink -f "${1:-build/release/bin}")
window=${WINDOW:-30}
[[ $EUID -eq 0 ]] || { echo "bench-idle: needs root (network namespaces)"; exit 1; }
command -v keepalived > /dev/null || { echo "bench-idle: keepalived is missing (make bench-deps)"; exit 1; }
work=$(mktemp -d /tmp/tandem-idle-XXXXXX)
prefix="tbi$$"
a="$prefix-a"; b="$prefix-b"
trap 'for ns in $a $b; do ip netns pids $ns 2>/dev/null | xargs -r kill -9; ip netns del $ns 2>/dev/null; done; rm -rf "$work"' EXIT
for ns in "$a" "$b"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add eth0 netns "$a" type veth peer name eth0 netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev eth0; ip -n "$b" addr add 10.77.0.2/24 dev eth0
ip -n "$a" link set eth0 up; ip -n "$b" link set eth0 up

cpu_ns() { local t=0 p; for p in "$@"; do t=$((t + $(cat /proc/"$p"/task/*/schedstat | awk '{s += $1} END {print s}'))); done; echo "$t"; }
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
measure() {  # name pids...: prints "cpu_percent rss_kib"
    local t0 t1 c0 c1
    c0=$(cpu_ns "$@"); t0=$(date +%s.%N)
    sleep "$window"   # the measurement window itself, not a wait for an event
    c1=$(cpu_ns "$@"); t1=$(date +%s.%N)
    awk -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" -v rss="$(rss_kib "$@")" \
        'BEGIN { printf "%.4f %d\n", 100 * c / 1e9 / (t1 - t0), rss }'
}

head -c 64 /dev/urandom > "$work/key"; chmod 600 "$work/key"
for n in alpha beta; do
    if [[ $n == alpha ]]; then role=primary addr=10.77.0.1 peer=beta paddr=10.77.0.2
    else role=secondary addr=10.77.0.2 peer=alpha paddr=10.77.0.1; fi
    printf '[cluster]\nname="idle"\nvip="10.77.0.100/24"\ninterface="eth0"\n[node]\nname="%s"\nrole="%s"\naddress="%s"\nstate_dir="%s"\n[peer]\nname="%s"\naddress="%s"\n[heartbeat]\ninterval="1s"\ntimeout="3s"\n[auth]\nkey_file="%s"\n[control]\nsocket="%s"\n' \
        "$n" "$role" "$addr" "$work" "$peer" "$paddr" "$work/key" "$work/$n.sock" > "$work/$n.toml"
done
ip netns exec "$a" "$bin/tandemd" -c "$work/alpha.toml" 2> /dev/null & ta=$!
ip netns exec "$b" "$bin/tandemd" -c "$work/beta.toml" 2> /dev/null & tb=$!
"$bin/tandemctl" -s "$work/alpha.sock" wait state=ACTIVE --timeout 10s > /dev/null
"$bin/tandemctl" -s "$work/beta.sock" wait state=STANDBY --timeout 10s > /dev/null
read -r t_cpu_a t_rss_a < <(measure "$ta")
read -r t_cpu_b t_rss_b < <(measure "$tb")
kill "$ta" "$tb"; wait "$ta" "$tb" 2>/dev/null || true

for n in alpha beta; do
    [[ $n == alpha ]] && prio=150 || prio=100
    printf 'global_defs {\n router_id %s\n vrrp_version 3\n}\nvrrp_instance VI_1 {\n state BACKUP\n interface eth0\n virtual_router_id 78\n priority %s\n advert_int 1\n nopreempt\n virtual_ipaddress {\n  10.77.0.100/24 dev eth0 label eth0:0\n }\n}\n' "$n" "$prio" > "$work/ka-$n.conf"
done
ip netns exec "$a" keepalived -n -l -P -f "$work/ka-alpha.conf" -p "$work/ka-a.pid" -r "$work/ka-a-v.pid" > "$work/ka-a.log" 2>&1 &
ip netns exec "$b" keepalived -n -l -P -f "$work/ka-beta.conf" -p "$work/ka-b.pid" -r "$work/ka-b-v.pid" > "$work/ka-b.log" 2>&1 &
disown -a  # the exit trap kills them; no job-control noise
until grep -q 'Entering MASTER STATE' "$work/ka-a.log" 2>/dev/null; do sleep 0.1; done
ka_pids() { cat "$work/ka-$1.pid" "$work/ka-$1-v.pid"; }
read -r k_cpu_a k_rss_a < <(measure $(ka_pids a))
read -r k_cpu_b k_rss_b < <(measure $(ka_pids b))

printf '\nidle pair, 1 s heartbeats/adverts, %s s window per node\n' "$window"
printf '%-34s %12s %12s\n' "" "CPU %" "RSS KiB"
printf '%-34s %12s %12s\n' "tandemd active (1 process)" "$t_cpu_a" "$t_rss_a"
printf '%-34s %12s %12s\n' "tandemd standby (1 process)" "$t_cpu_b" "$t_rss_b"
printf '%-34s %12s %12s\n' "keepalived master (2 processes)" "$k_cpu_a" "$k_rss_a"
printf '%-34s %12s %12s\n' "keepalived backup (2 processes)" "$k_cpu_b" "$k_rss_b"
awk -v t="$t_rss_a" -v k="$k_rss_a" -v tc="$t_cpu_a" -v kc="$k_cpu_a" 'BEGIN {
    printf "active node, tandemd / keepalived: CPU %.2f, RSS %.2f\n", (kc > 0 ? tc / kc : 0), t / k }'
