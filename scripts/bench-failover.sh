#!/usr/bin/env bash
# make bench-failover: client-observed outage of a crash failover, Tandem vs keepalived, in one run.
#
# Same topology for both: alpha, beta and a client on one bridge in namespaces;
# the client pings the VIP every 10 ms. The active node "crashes": first all its
# traffic is dropped (nftables, both directions), then its processes are
# SIGKILLed without a goodbye. Reported per trial: the longest gap between two
# replies (the outage), and for Tandem the time from the takeover decision (the
# survivor's state.changed -> ACTIVE event) to the first reply after it.
# Detection budget on both sides: 100 ms adverts/heartbeats, 300 ms to declare
# the peer dead (keepalived: VRRPv3 advert_int 0.1 s, master down = 3 x 0.1 s
# plus the skew time of its priority).
set -euo pipefail
bin=$(readlink -f "${1:-build/release/bin}")
trials=${TRIALS:-11}
[[ $EUID -eq 0 ]] || { echo "bench-failover: needs root (network namespaces)"; exit 1; }
for tool in keepalived ping nft; do
    command -v "$tool" > /dev/null || { echo "bench-failover: '$tool' is missing (make bench-deps)"; exit 1; }
done

work=$(mktemp -d /tmp/tandem-bench-XXXXXX)
prefix="tbf$$"
namespaces=()
cleanup() {
    for ns in "${namespaces[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    namespaces=()
}
trap 'cleanup; rm -rf "$work"' EXIT

# Polls a condition with a deadline (seconds); the pause only paces the polling.
wait_for() {
    local deadline=$(($(date +%s%N) + $1 * 1000000000)); shift
    until "$@"; do
        (($(date +%s%N) < deadline)) || return 1
        sleep 0.01
    done
}

# shellcheck source=lib/cluster.sh
source "$(dirname "$(readlink -f "$0")")/lib/cluster.sh"
topology() { make_topology "$prefix-$1"; }  # $1: trial tag

vip_on() { ip -n "$1" -o addr show dev eth0 | grep -q ' 10.77.0.100/24 '; }
replies() { grep -c 'bytes from' "$work/ping.txt" 2>/dev/null || true; }
replies_after() { awk -v t="$1" -F'[][]' '/bytes from/ && $2 > t {n++} END {print n+0}' "$work/ping.txt"; }

# Runs the crash with a client pinging; prints "outage_ms decision_epoch_or_-".
crash_and_measure() {  # $1: command that prints the survivor's decision time (epoch s) or "-"
    ip netns exec "$client" ping -D -n -i 0.01 -W 1 10.77.0.100 > "$work/ping.txt" 2>&1 &
    local ping_pid=$!
    wait_for 5 test "$(replies)" -ge 30
    # The moment we got here is phase-locked to a received heartbeat (the
    # survivor reported STANDBY on one); a crash at a fixed offset from it would
    # always hit the same point of the 100 ms cycle. Crash at a random phase.
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", (r % 1000) / 10000 }')"
    # Valid only if alpha alone holds the VIP at the crash (keepalived can start
    # with a short dual-master phase); the caller redoes an invalid trial.
    if ! vip_on "$alpha" || vip_on "$beta"; then
        kill "$ping_pid" 2>/dev/null; wait "$ping_pid" 2>/dev/null || true
        echo invalid
        return
    fi
    local crash
    crash=$(date +%s.%N)
    ip netns exec "$alpha" nft -f - <<'NFT'
table inet crash {
  chain in { type filter hook input priority -300; policy drop; }
  chain out { type filter hook output priority -300; policy drop; }
}
NFT
    ip netns pids "$alpha" | xargs -r kill -9
    wait_for 10 test "$(replies_after "$crash")" -ge 30 || true
    kill "$ping_pid" 2>/dev/null; wait "$ping_pid" 2>/dev/null || true
    local decision
    decision=$($1)
    awk -F'[][]' -v crash="$crash" -v decision="$decision" '
        /bytes from/ { t = $2; if (prev && t - prev > gap) gap = t - prev; prev = t
                       if (decision != "-" && !first && t > decision) first = t }
        END { printf "%.1f %s %s\n", gap * 1000, (decision != "-" && first) ? sprintf("%.2f", (first - decision) * 1000) : "-",
                     decision != "-" ? sprintf("%.1f", (decision - crash) * 1000) : "-" }
    ' "$work/ping.txt"
}

tandem_decision() {
    local t
    t=$("$bin/tandemctl" -s "$work/beta.sock" events --backlog 200 |
        grep '"id":"state.changed"' | grep '"to":"ACTIVE"' | tail -1 | sed -n 's/.*"time":"\([^"]*\)".*/\1/p')
    [[ -n $t ]] && date -d "$t" +%s.%N || echo -
}

tandem_trial() {
    topology "t$1"
    head -c 64 /dev/urandom > "$work/cluster.key"; chmod 600 "$work/cluster.key"
    node_config bench alpha primary 10.77.0.1 beta 10.77.0.2 "$work" > "$work/alpha.toml"
    node_config bench beta secondary 10.77.0.2 alpha 10.77.0.1 "$work" > "$work/beta.toml"
    ip netns exec "$alpha" "$bin/tandemd" -c "$work/alpha.toml" 2> "$work/alpha.log" &
    ip netns exec "$beta" "$bin/tandemd" -c "$work/beta.toml" 2> "$work/beta.log" &
    "$bin/tandemctl" -s "$work/alpha.sock" wait state=ACTIVE --timeout 10s > /dev/null
    "$bin/tandemctl" -s "$work/beta.sock" wait state=STANDBY --timeout 10s > /dev/null
    crash_and_measure tandem_decision
    cleanup
}

keepalived_trial() {
    topology "k$1"
    local n prio
    for n in alpha beta; do
        [[ $n == alpha ]] && prio=150 || prio=100
        cat > "$work/ka-$n.conf" <<KA
global_defs {
    router_id $n
    vrrp_version 3
    script_user root
    enable_script_security
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 77
    priority $prio
    advert_int 0.1
    nopreempt
    virtual_ipaddress {
        10.77.0.100/24 dev eth0 label eth0:0
    }
}
KA
        ip netns exec "${n/alpha/$alpha}" true 2>/dev/null || true
    done
    ip netns exec "$alpha" keepalived -n -l -P -f "$work/ka-alpha.conf" -p "$work/ka-a.pid" -r "$work/ka-a-vrrp.pid" > "$work/ka-alpha.log" 2>&1 &
    ip netns exec "$beta" keepalived -n -l -P -f "$work/ka-beta.conf" -p "$work/ka-b.pid" -r "$work/ka-b-vrrp.pid" > "$work/ka-beta.log" 2>&1 &
    wait_for 10 vip_on "$alpha"
    wait_for 10 grep -q 'Entering BACKUP STATE' "$work/ka-beta.log"
    crash_and_measure "echo -"
    cleanup
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { sort -n | awk 'NR==1{min=$1} {max=$1} END {printf "%s-%s", min, max}'; }

echo "failover outage seen by a client pinging the VIP every 10 ms; $trials trials each, alternating"
: > "$work/tandem.txt"; : > "$work/ka.txt"
for i in $(seq 1 "$trials"); do
    for attempt in 1 2 3; do t=$(tandem_trial "$i$attempt"); [[ $t != invalid ]] && break; done
    for attempt in 1 2 3; do k=$(keepalived_trial "$i$attempt"); [[ $k != invalid ]] && break; done
    [[ $t != invalid && $k != invalid ]] || { echo "bench-failover: trial $i invalid three times"; exit 1; }
    echo "$t" >> "$work/tandem.txt"
    echo "$k" >> "$work/ka.txt"
    read -r t_out t_first t_detect <<< "$t"
    printf '  trial %d: tandem outage %s ms (crash -> decision %s ms, decision -> first reply %s ms); keepalived outage %s ms\n' \
        "$i" "$t_out" "$t_detect" "$t_first" "${k%% *}"
done
t_med=$(cut -d' ' -f1 "$work/tandem.txt" | median); k_med=$(cut -d' ' -f1 "$work/ka.txt" | median)
d_med=$(cut -d' ' -f2 "$work/tandem.txt" | grep -v - | median)
printf '\n%-58s %8s %14s\n' "" "median" "spread"
printf '%-58s %6s ms %11s ms\n' "Tandem outage (heartbeat 100 ms, timeout 300 ms)" "$t_med" "$(cut -d' ' -f1 "$work/tandem.txt" | minmax)"
printf '%-58s %6s ms %11s ms\n' "keepalived outage (VRRPv3 advert 0.1 s, prio 150/100)" "$k_med" "$(cut -d' ' -f1 "$work/ka.txt" | minmax)"
printf '%-58s %6s ms %11s ms\n' "Tandem decision -> first client reply" "$d_med" "$(cut -d' ' -f2 "$work/tandem.txt" | grep -v - | minmax)"
awk -v t="$t_med" -v k="$k_med" 'BEGIN {printf "ratio Tandem / keepalived outage: %.2f (goal <= 0.80)\n", t / k}'
