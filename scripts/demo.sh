#!/usr/bin/env bash
# make demo: a real two-node Tandem cluster in network namespaces on this machine.
# Two appliances (alpha primary, beta secondary) and a client share one bridge;
# the demo shows cstate, the VIP on eth0:0, /store replicated on TCP 7789 (a full
# sync, then a crash failover seen by the client, the recovered primary joining
# as standby with a bitmap resync), and a giveback. Everything it creates is
# removed on exit, whatever happens.
set -euo pipefail
bin=$(readlink -f "${1:-build/release/bin}")
[[ $EUID -eq 0 ]] || { echo "demo: needs root (it creates network namespaces)"; exit 1; }

id="tdemo$$"
work=$(mktemp -d /tmp/tandem-demo-XXXXXX)
# shellcheck source=lib/cluster.sh
source "$(dirname "$(readlink -f "$0")")/lib/cluster.sh"
namespaces=()
loops=()
cleanup() {
    for dev in "${loops[@]}"; do losetup -d "$dev" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
ctl() { local node=$1; shift; "$bin/tandemctl" -s "$work/$node.sock" "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

step "Building the hosts: alpha (10.77.0.1), beta (10.77.0.2) and a client (10.77.0.10) on one bridge"
make_topology "$id"
head -c 64 /dev/urandom > "$work/cluster.key" && chmod 600 "$work/cluster.key"

# /store on each appliance: a 256 MiB memory-backed loop device; alpha's holds data.
truncate -s 256M "$work/store-alpha" "$work/store-beta"
store_a=$(losetup -f --show "$work/store-alpha"); loops+=("$store_a")
store_b=$(losetup -f --show "$work/store-beta"); loops+=("$store_b")
"$bin/tandem-repl-bench" --fill --source "$store_a" > /dev/null
node_config store-ha alpha primary 10.77.0.1 beta 10.77.0.2 "$work" "$store_a" > "$work/alpha.toml"
node_config store-ha beta secondary 10.77.0.2 alpha 10.77.0.1 "$work" "$store_b" > "$work/beta.toml"
digest() { sha256sum < "$1" | cut -c1-16; }
run "$bin/tandemd" --check-config "$work/alpha.toml"

step "Starting tandemd on both appliances (heartbeats every 100 ms, peer lost after 300 ms)"
in_ns "$alpha" "$bin/tandemd" -c "$work/alpha.toml" 2> "$work/alpha.log" &
in_ns "$beta" "$bin/tandemd" -c "$work/beta.toml" 2> "$work/beta.log" &
ctl alpha wait state=ACTIVE --timeout 10s > /dev/null

step "A new cluster: alpha's /store is copied to beta over TCP 7789 (beta is SYNCHRONIZING until done)"
run ctl beta sync --timeout 120s
ctl beta wait state=STANDBY --timeout 10s > /dev/null
printf 'sha256 of /store  alpha: %s  beta: %s\n' "$(digest "$store_a")" "$(digest "$store_b")"
run ctl alpha cstate
run ctl beta cstate

step "The VIP is on alpha's alias eth0:0, and the client reaches it"
run in_ns "$alpha" ip -o -4 addr show dev eth0
run in_ns "$client" ping -c 2 -i 0.2 10.77.0.100
printf 'client neighbour entry: %s  (alpha is %s)\n' \
    "$(in_ns "$client" ip neigh show 10.77.0.100 | awk '{print $5}')" "$(in_ns "$alpha" cat /sys/class/net/eth0/address)"

step "Crash: alpha's link goes silent and its tandemd is killed without a goodbye"
since=$(ctl beta events --backlog 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
ip netns pids "$alpha" | xargs -r kill -9
in_ns "$alpha" ip link set eth0 down
ctl beta wait state=ACTIVE --timeout 10s --since "$since" > /dev/null
run ctl beta cstate
echo "beta's event stream for the failover:"
ctl beta events --backlog 30 | grep -E '"id":"(peer.lost|state.changed|failover.phase|failover.sequence)"' |
    sed -n 's/.*"id":"\([^"]*\)","message":"\(.*\)","mo.*/  \1: \2/p' | sed 's/\\"/"/g' | tail -9
run in_ns "$client" ping -c 2 -i 0.2 10.77.0.100
printf 'client neighbour entry: %s  (beta is %s; the client learned it from the gratuitous ARP)\n' \
    "$(in_ns "$client" ip neigh show 10.77.0.100 | awk '{print $5}')" "$(in_ns "$beta" cat /sys/class/net/eth0/address)"

step "alpha is repaired and restarted: it joins as standby (no automatic failback)"
in_ns "$alpha" ip link set eth0 up
in_ns "$alpha" "$bin/tandemd" -c "$work/alpha.toml" 2>> "$work/alpha.log" &
ctl alpha sync --timeout 60s > /dev/null
ctl alpha wait state=STANDBY --timeout 10s > /dev/null
echo "alpha's replication decision on rejoining (only what beta changed is sent, not the whole volume):"
ctl alpha events --backlog 30 | grep -E '"id":"replication.(connected|sync_done)"' |
    sed -n 's/.*"message":"\([^"]*\)".*/  \1/p' | tail -2
run ctl alpha cstate

step "The operator switches the primary back: giveback on the active node"
run ctl beta giveback
ctl alpha wait state=ACTIVE --timeout 10s > /dev/null
run ctl alpha cstate
run ctl beta cstate

printf 'sha256 of /store  alpha: %s  beta: %s\n' "$(digest "$store_a")" "$(digest "$store_b")"

step "Done; removing the namespaces"
