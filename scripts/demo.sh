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
keepers=()
cleanup() {
    # tandemd first, then the keepers of the mount namespaces: the last process
    # of a namespace unmounts /store, which needs a FUSE server that is gone.
    for ns in "${namespaces[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    sleep 0.2
    for k in "${keepers[@]}"; do { kill -9 "$k" && wait "$k"; } 2>/dev/null || true; done
    for dev in "${loops[@]}"; do losetup -d "$dev" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
ctl() { local node=$1; shift; "$bin/tandemctl" -s "$work/$node.sock" "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Each tandemd mounts /store in its own mount namespace (ip netns exec makes one).
daemon_pid() { pgrep -f "tandemd -c $work/$1.toml" | head -1; }
in_store() { local node=$1; shift; nsenter -t "$(daemon_pid "$node")" -m -- "$@"; }
start_node() {
    local node=$1 ns=$2
    in_ns "$ns" "$bin/tandemd" -c "$work/$node.toml" 2>> "$work/$node.log" &
    local pid=""
    for _ in $(seq 100); do
        pid=$(daemon_pid "$node")
        [[ -n $pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == */tandemd ]] && break
        sleep 0.05
    done
    nsenter -t "$pid" -m -- sleep infinity & keepers+=("$!")
}

step "Building the hosts: alpha (10.77.0.1), beta (10.77.0.2) and a client (10.77.0.10) on one bridge"
make_topology "$id"
head -c 64 /dev/urandom > "$work/cluster.key" && chmod 600 "$work/cluster.key"

# /store on each appliance: a blank 256 MiB memory-backed loop device. The
# primary creates the file system on first start (the seeds' first-time set-up).
truncate -s 256M "$work/store-alpha" "$work/store-beta"
store_a=$(losetup -f --show "$work/store-alpha"); loops+=("$store_a")
store_b=$(losetup -f --show "$work/store-beta"); loops+=("$store_b")
node_config store-ha alpha primary 10.77.0.1 beta 10.77.0.2 "$work" "$store_a" > "$work/alpha.toml"
node_config store-ha beta secondary 10.77.0.2 alpha 10.77.0.1 "$work" "$store_b" > "$work/beta.toml"
run "$bin/tandemd" --check-config "$work/alpha.toml"

step "Starting tandemd on both appliances (heartbeats every 100 ms, peer lost after 300 ms)"
start_node alpha "$alpha"
start_node beta "$beta"
ctl alpha wait event=failover.complete --since 0 --timeout 20s > /dev/null

step "A new cluster: alpha's /store is copied to beta over TCP 7789 (beta is SYNCHRONIZING until done)"
run ctl beta sync --timeout 120s
ctl beta wait state=STANDBY --timeout 10s > /dev/null
# alpha's promotion started a new generation; the peer catches up on what /store's creation wrote.
ctl alpha sync --timeout 60s > /dev/null

step "/store is mounted on the active node only; an application writes to it"
run in_store alpha findmnt -n -o SOURCE,TARGET,FSTYPE "$work/alpha-store"
printf 'on beta: %s\n' "$(in_store beta findmnt -n "$work/beta-store" > /dev/null && echo mounted || echo "not mounted (standby)")"
in_store alpha sh -c "head -c 16M /dev/urandom > $work/alpha-store/orders.db && sync $work/alpha-store/orders.db"
before=$(in_store alpha sha256sum "$work/alpha-store/orders.db" | cut -c1-16)
printf 'alpha wrote orders.db (16 MiB, fsynced): sha256 %s\n' "$before"
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
ctl beta wait event=failover.complete --timeout 20s --since "$since" > /dev/null
run ctl beta cstate
echo "beta's event stream for the failover:"
ctl beta events --backlog 30 | grep -E '"id":"(peer.lost|state.changed|failover.phase|failover.sequence)"' |
    sed -n 's/.*"id":"\([^"]*\)","message":"\(.*\)","mo.*/  \1: \2/p' | sed 's/\\"/"/g' | tail -9
run in_ns "$client" ping -c 2 -i 0.2 10.77.0.100
printf 'client neighbour entry: %s  (beta is %s; the client learned it from the gratuitous ARP)\n' \
    "$(in_ns "$client" ip neigh show 10.77.0.100 | awk '{print $5}')" "$(in_ns "$beta" cat /sys/class/net/eth0/address)"

run in_store beta findmnt -n -o SOURCE,TARGET,FSTYPE "$work/beta-store"
printf 'orders.db on beta after the crash: sha256 %s (alpha wrote %s)\n' \
    "$(in_store beta sha256sum "$work/beta-store/orders.db" | cut -c1-16)" "$before"
in_store beta sh -c "head -c 8M /dev/urandom > $work/beta-store/invoices.db && sync $work/beta-store/invoices.db"
during=$(in_store beta sha256sum "$work/beta-store/invoices.db" | cut -c1-16)
printf 'beta wrote invoices.db (8 MiB) while alpha is down: sha256 %s\n' "$during"

step "alpha is repaired and restarted: it joins as standby (no automatic failback)"
in_ns "$alpha" ip link set eth0 up
start_node alpha "$alpha"
ctl alpha sync --timeout 60s > /dev/null
ctl alpha wait state=STANDBY --timeout 10s > /dev/null
echo "alpha's replication decision on rejoining (only what beta changed is sent, not the whole volume):"
ctl alpha events --backlog 30 | grep -E '"id":"replication.(connected|sync_done)"' |
    sed -n 's/.*"message":"\([^"]*\)".*/  \1/p' | tail -2
run ctl alpha cstate

step "The operator switches the primary back: giveback on the active node"
since=$(ctl alpha events --backlog 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
run ctl beta giveback
ctl alpha wait event=failover.complete --timeout 20s --since "$since" > /dev/null
run ctl alpha cstate
run ctl beta cstate
printf 'on alpha after the giveback: orders.db %s, invoices.db %s\n' \
    "$(in_store alpha sha256sum "$work/alpha-store/orders.db" | cut -c1-16)" \
    "$(in_store alpha sha256sum "$work/alpha-store/invoices.db" | cut -c1-16)"

step "Done; removing the namespaces"
