#!/usr/bin/env bash
# make image-test-ha: two guests of the image, alpha (primary) and beta
# (secondary), joined by two bridges in a network namespace of their own:
# management (eth0, with an observer at 10.99.0.254) and crossover (eth1).
#   image/test-ha.sh OUT_DIR [uring|drbd|shared] [TIMEOUT_S]
# 1. both boot; alpha becomes ACTIVE with the VIP, /store syncs to beta, (uring)
#    fstrim on alpha's /store sends discards through nbd.ko and the copies stay
#    in sync, alpha writes a file on /store durably and reports READY;
# 2. alpha's power is cut (qemu SIGKILLed): beta takes over, the VIP moves
#    (the observer's ARP entry follows the gratuitous ARP), /store is mounted
#    on beta and holds alpha's file; beta writes a second file;
#    (uring) then tandemd is killed on beta: systemd starts it again, and it
#    detaches the stale NBD mount, claims again and mounts /store with the file
#    (within the watchdog's timeout: beta is not reset);
# 3. alpha boots again: it stays STANDBY (no automatic failback) and resyncs:
#    with uring only the delta (checked: under half the store); DRBD 8.4 resyncs what
#    its on-disk bitmap marks, which after a power cut can be the whole device;
#    with DRBD alpha then discards its data (a full resync), and loses its
#    crossover address until DRBD gives up (StandAlone): tandemd reconnects it;
# 4. (uring) alpha's disk is flattened with tandem-recovery and provisioned
#    again: it re-pairs as standby, receives a full resync from beta, and a
#    manual takeover shows both files on its /store ("Restore System");
# 5. (uring) tandemd dies on alpha and systemd may not start it again: the
#    watchdog it left running resets alpha, and beta serves the VIP.
# Each guest has a watchdog (qemu's i6300esb) that tandemd arms with a 30 s
# timeout ([watchdog]); a reset ends that guest's qemu (-no-reboot), so a
# spurious one fails the step that waits on it. With DRBD, alpha's clean stop
# at the end stops its watchdog.
# With uring the active node exposes /store through the NBD front end (nbd.ko is
# in the image's kernel, not on the build machine, whose tests cover FUSE).
# The guests' half is image/hatest.sh. Each node's identity goes on its config
# partition with tandem-recovery provision. Copies of the disk are booted.
set -euo pipefail
out=$(readlink -f "${1:?OUT_DIR}")
backend=${2:-uring}
limit=${3:-1500}
here=$(dirname "$(readlink -f "$0")")
[[ $backend == uring || $backend == drbd || $backend == shared ]] ||
    { echo "image-test-ha: backend \"$backend\": allowed uring, drbd, shared"; exit 2; }
(cd "$out" && sha256sum --quiet -c SHA256SUMS) || { echo "image-test-ha: checksums do not match SHA256SUMS"; exit 1; }

work=$(mktemp -d /tmp/tandem-ha-XXXXXX)
ns=tandem-ha-$$
declare -A pid=() from=()
repair=skipped
cleanup() {
    for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    for n in alpha beta; do cp "$work/$n.log" "$out/ha-$backend-$n.log" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "image-test-ha ($backend, $(since "$t0") s): $*"; }
die() {  # to stderr: await runs in a command substitution
    {   # Short, the reason last: CI may show only the end (the whole consoles go to OUT_DIR/ha-*.log).
        for n in alpha beta; do
            echo "--- $n's console since its last boot: steps, Tandem and DRBD lines, the last 14:"
            tail -n +"${from[$n]:-1}" "$work/$n.log" 2>/dev/null | grep -a "TANDEM-HATEST\|drbd\|tandem" | cut -c1-220 | tail -14 || true
        done
        say "FAILED: $*"
    } >&2
    exit 1
}

# Each node's settings, on its own copy of the disk.
head -c 64 /dev/urandom > "$work/cluster.key"
declare -A me=([alpha]=1 [beta]=2) peer=([alpha]=beta [beta]=alpha) role=([alpha]=primary [beta]=secondary)
for n in alpha beta; do
    c=$work/config-$n
    mkdir -p "$c/network"
    install -m 0600 "$work/cluster.key" "$c/cluster.key"
    printf '[Match]\nName=eth0\n\n[Network]\nAddress=10.99.0.%s/24\n' "${me[$n]}" > "$c/network/eth0.network"
    printf '[Match]\nName=eth1\n\n[Network]\nAddress=10.98.0.%s/24\n' "${me[$n]}" > "$c/network/eth1.network"
    cat > "$c/tandem.toml" <<EOF
# image-test-ha: node $n of a two-guest cluster.
[cluster]
name = "appliance"
vip = "10.99.0.100/24"
interface = "eth0"
[node]
name = "$n"
role = "${role[$n]}"
address = "10.99.0.${me[$n]}"
[peer]
name = "${peer[$n]}"
address = "10.99.0.${me[${peer[$n]}]}"
[heartbeat]
interval = "1s"
timeout = "5s"
links = ["eth0", "eth1"]
[crossover]
interface = "eth1"
address = "10.98.0.${me[$n]}"
peer_address = "10.98.0.${me[${peer[$n]}]}"
[auth]
key_file = "/etc/tandem/cluster.key"
[replication]
backend = "$backend"
$(if [[ $backend == shared ]]; then
    echo 'device = "/dev/disk/by-id/virtio-tandem-store"'
    echo 'lease_device = "/dev/disk/by-id/virtio-tandem-lease"'
else
    echo 'device = "/dev/disk/by-partlabel/store"'
    echo 'rate = 1000'
fi)
[store]
mount = "/store"
$([[ $backend == uring ]] && echo 'frontend = "nbd"')
[watchdog]
device = "/dev/watchdog"
$([[ $backend == shared ]] && echo 'timeout = "6s"' || echo 'timeout = "30s"')
EOF
    cp --sparse=always "$out/disk.img" "$work/$n.img"
    "$here/recovery/tandem-recovery" provision --target "$work/$n.img" --config "$c" > "$work/provision-$n.log" 2>&1 ||
        { cat "$work/provision-$n.log"; die "provisioning $n's config partition"; }
done

# The wires: two bridges in a namespace, a tap per guest and link; the observer
# (this script) is 10.99.0.254 on the management bridge.
ip netns add "$ns"
nsx() { ip netns exec "$ns" "$@"; }
nsx ip link set lo up
for br in mgmt xo; do nsx ip link add "$br" type bridge; nsx ip link set "$br" up; done
nsx ip addr add 10.99.0.254/24 dev mgmt
for n in alpha beta; do
    for l in 0 1; do
        nsx ip tuntap add "t-$n-$l" mode tap
        nsx ip link set "t-$n-$l" master "$( ((l == 0)) && echo mgmt || echo xo)" up
    done
done
mac() { printf '52:54:00:99:%02x:%02x' "${me[$1]}" "$2"; }
# Shared storage: one store disk and one lease disk (zeros), both files attached
# to both guests, as a LUN presented to two hosts. qemu's image locking is off
# for them, and each guest gets a QMP socket through which the script throttles
# its path to them (the hung storage path).
shared_disks=()
if [[ $backend == shared ]]; then
    truncate -s 256M "$work/shared-store.img"
    truncate -s 1M "$work/shared-lease.img"
    for d in store lease; do
        shared_disks+=(-drive "file=$work/shared-$d.img,format=raw,if=none,id=$d,file.locking=off"
                       -device "virtio-blk-pci,drive=$d,serial=tandem-$d,addr=0$([[ $d == store ]] && echo 6 || echo 7)")
    done
fi
boot() {  # node step
    local n=$1
    echo "=== boot: tandem.hatest=$2" >> "$work/$n.log"
    from[$n]=$(wc -l < "$work/$n.log")  # await reads this boot's lines only
    # nsenter execs qemu itself (ip netns exec forks): $! is qemu, so a kill is a power cut.
    nsenter --net="/run/netns/$ns" qemu-system-x86_64 -accel tcg -machine q35 -cpu max -smp 1 -m 768 -nographic -no-reboot \
        -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
        -append "root=PARTLABEL=root_a rw console=ttyS0 net.ifnames=0 systemd.hostname=$n tandem.hatest=$2" \
        -drive "file=$work/$n.img,format=raw,if=virtio" \
        -netdev "tap,id=mgmt,ifname=t-$n-0,script=no,downscript=no" -device "virtio-net-pci,netdev=mgmt,addr=03,mac=$(mac "$n" 0)" \
        -netdev "tap,id=xo,ifname=t-$n-1,script=no,downscript=no" -device "virtio-net-pci,netdev=xo,addr=04,mac=$(mac "$n" 1)" \
        -device i6300esb,addr=05 "${shared_disks[@]}" \
        $([[ $backend == shared ]] && echo "-qmp unix:$work/$n.qmp,server=on,wait=off") \
        >> "$work/$n.log" 2>&1 &
    pid[$n]=$!
}
# Waits for "TANDEM-HATEST <node> <what>" on a node's console; fails at once on
# its FAIL line, when its qemu is gone, or at the overall time limit.
await() {  # node what -> the line
    local n=$1 what=$2 line
    while :; do
        line=$(tail -n +"${from[$n]}" "$work/$n.log" | grep -a "TANDEM-HATEST $n $what" | tail -1 || true)
        [[ -n $line ]] && { echo "${line%$'\r'}"; return 0; }
        line=$(tail -n +"${from[$n]}" "$work/$n.log" | grep -a -m1 "TANDEM-HATEST $n FAIL" || true)
        [[ -z $line ]] || die "$n: $line"
        kill -0 "${pid[$n]}" 2>/dev/null || die "$n's qemu ended before \"$what\""
        (($(date +%s) - ${t0%.*} < limit)) || die "no \"$what\" from $n within ${limit} s"
        sleep 0.2  # paces the polling of the console file only
    done
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"; }
vip_mac() { nsx ip neigh show 10.99.0.100 dev mgmt | awk '{print $3}'; }

# Sends one QMP command to a guest's qemu; fails naming the command and qemu's answer.
qmp() {  # node json
    local answer
    answer=$(python3 - "$work/$1.qmp" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def reply():
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m:
            return m
        # greetings and asynchronous events are skipped
f.readline()  # the greeting
f.write('{"execute": "qmp_capabilities"}\n'); f.flush(); reply()
f.write(sys.argv[2] + "\n"); f.flush()
print(json.dumps(reply()))
PY
    ) || die "QMP to $1's qemu: $2: no answer"
    [[ $answer == '{"return": {}}' ]] || die "QMP to $1's qemu: $2: $answer"
}

# Waits (at most 120 s) for alpha's qemu to end: its watchdog's reset, under
# -no-reboot. Its console from the line "TANDEM-HATEST alpha MARKER" on, kept
# in $after_reset, must show no reboot, power-off or panic. Sets $reset_after,
# the seconds since $t.
await_reset() {  # marker what-happened
    timeout 120 tail --pid="${pid[alpha]}" -s 0.2 -f /dev/null ||
        die "alpha was not reset within 120 s of $2 (its watchdog's timeout is $(field watchdog "$ready"))"
    wait "${pid[alpha]}" 2>/dev/null || true
    unset 'pid[alpha]'
    reset_after=$(since "$t")
    after_reset=$(tail -n +"${from[alpha]}" "$work/alpha.log" | sed -n "/TANDEM-HATEST alpha $1/,\$p")
    ! grep -aq "reboot: \|Kernel panic\|Power down" <<< "$after_reset" ||
        die "alpha's console shows a reboot, power-off or panic after $2: not a watchdog reset"
}
# Beta took over once alpha's heartbeats stopped; alpha's kernel may have
# answered for the VIP until its reset, so the observer asks again.
vip_on_beta() {
    nsx ip neigh flush dev mgmt
    nsx ping -c 1 -W 2 10.99.0.100 > /dev/null || die "nobody answers for the VIP after alpha's reset"
    [[ $(vip_mac) == "$(mac beta 0)" ]] || die "the VIP answers from $(vip_mac) after alpha's reset, not beta's"
}

if [[ $backend == shared ]]; then
    # 1. Both boot; alpha takes the lease, creates the file system on the shared
    #    store (first-time set-up), mounts /store and writes a file durably.
    boot alpha sharedactive
    boot beta sharedstandby
    t=$(date +%s.%N)
    standby=$(await beta STANDBY)
    say "beta: $standby"
    ready=$(await alpha READY)
    boot_to_ready=$(since "$t")
    say "alpha: $ready"
    [[ $(field store "$ready") == mounted ]] || die "/store is not mounted on alpha"
    [[ $(field dev "$ready") == /dev/vd* ]] || die "alpha's /store is on $(field dev "$ready"), not the shared virtio disk"
    [[ $(field watchdog "$ready") == active,6s ]] ||
        die "alpha's watchdog is \"$(field watchdog "$ready")\", not armed by tandemd with 6 s (active,6s)"
    [[ $(field store "$standby") == unmounted ]] || die "the standby beta has /store mounted"
    # 2. Alpha's path to the shared storage hangs (qemu lets a byte a second
    #    through): its lease renewals stop, so it stops feeding its watchdog,
    #    and the release it starts cannot unmount. The watchdog (6 s, at most
    #    2 x 5 s - 2 x 1 s) must reset alpha before beta, which claims 2 x 5 s
    #    after the last renewal it saw, mounts /store.
    for d in store lease; do
        qmp alpha "{\"execute\": \"block_set_io_throttle\", \"arguments\": {\"device\": \"$d\", \"bps\": 1,
            \"bps_rd\": 0, \"bps_wr\": 0, \"iops\": 0, \"iops_rd\": 0, \"iops_wr\": 0}}"
    done
    t=$(date +%s.%N)
    say "alpha's path to the shared store and lease throttled to 1 byte/s"
    starving=$(await alpha STARVING)
    say "alpha: $starving"
    await_reset STARVING "its storage path hung"
    # At the reset, beta must not have mounted /store yet.
    ! tail -n +"${from[beta]}" "$work/beta.log" | grep -aq "TANDEM-HATEST beta TOOK-OVER" ||
        die "beta reported /store mounted before alpha's watchdog reset alpha"
    took=$(await beta TOOK-OVER)
    failover=$(since "$t")
    say "beta: $took"
    [[ $(field store "$took") == mounted ]] || die "/store is not mounted on beta after the takeover"
    [[ $(field before "$took") == "$(field before "$ready")" ]] ||
        die "alpha's file on the shared /store differs on beta: $(field before "$took") != $(field before "$ready")"
    vip_on_beta
    echo "image-test-ha ($backend) passed: boot to READY ${boot_to_ready} s; alpha's storage path hung, its watchdog" \
        "reset it ${reset_after} s later, before beta mounted /store (${failover} s after the hang, with alpha's file); total" \
        "$(since "$t0") s"
    exit 0
fi

want_dev=$([[ $backend == uring ]] && echo /dev/nbd || echo /dev/drbd)
boot alpha primary
boot beta standby
t=$(date +%s.%N)
standby=$(await beta STANDBY)
say "beta: $standby"
if [[ $backend == uring ]]; then
    # The engine names beta's volume by the GPT entry of its store partition, as udev read it.
    part_uuid=$(sfdisk -J "$work/beta.img" | python3 -c 'import json, sys
print(next(p["uuid"] for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name") == "store"))')
    # (sfdisk prints the UUID in capitals, udev in small letters)
    [[ $(field volume "$standby") == "partition:${part_uuid,,}" ]] ||
        die "beta's volume identity is $(field volume "$standby"), not its store partition's entry partition:${part_uuid,,}"
fi
ready=$(await alpha READY)
say "alpha: $ready"
boot_to_ready=$(since "$t")
[[ $(field vip "$ready") == 10.99.0.100/24 ]] || die "alpha is ACTIVE without the VIP on eth0:0"
[[ $(field store "$ready") == mounted ]] || die "/store is not mounted on alpha"
[[ $(field watchdog "$ready") == active,30s ]] ||
    die "alpha's watchdog is \"$(field watchdog "$ready")\", not armed by tandemd with 30 s (active,30s)"
before=$(field before "$ready")
if [[ $backend == uring ]]; then
    # fstrim on alpha's /store: discards through nbd.ko to the engine, replicated while in sync.
    trimmed=$(field trimmed "$ready")
    [[ $trimmed =~ ^[0-9]+$ ]] && (( trimmed >= 64 * 1048576 )) ||
        die "fstrim on alpha's /store (NBD) trimmed \"$trimmed\" bytes, not the free space of a new file system (64 MiB or more)"
    say "fstrim on alpha's /store trimmed $trimmed bytes through nbd.ko, and the peer stayed in sync"
fi
nsx ping -c 1 -W 2 10.99.0.100 > /dev/null || die "the observer cannot reach the VIP on alpha"
[[ $(vip_mac) == "$(mac alpha 0)" ]] || die "the VIP answers from $(vip_mac), not alpha's eth0 ($(mac alpha 0))"
say "the observer reaches the VIP at alpha's $(mac alpha 0)"

# Power cut on the active node.
kill -9 "${pid[alpha]}"
wait "${pid[alpha]}" 2>/dev/null || true
unset 'pid[alpha]'
t=$(date +%s.%N)
took=$(await beta TOOK-OVER)
failover=$(since "$t")
say "beta: $took"
[[ $(field vip "$took") == 10.99.0.100/24 ]] || die "beta took over without the VIP"
[[ $(field store "$took") == mounted ]] || die "/store is not mounted on beta after the takeover"
dev=$(field dev "$took")
[[ $dev == "$want_dev"* ]] || die "/store on beta is on $dev, not the $backend device $want_dev"
[[ $(field before "$took") == "$before" ]] || die "alpha's acknowledged file differs on beta: $(field before "$took") != $before"
[[ $(vip_mac) == "$(mac beta 0)" ]] || die "the observer's ARP entry for the VIP is $(vip_mac), not beta's $(mac beta 0)"
nsx ping -c 1 -W 2 10.99.0.100 > /dev/null || die "the observer cannot reach the VIP on beta"
say "the VIP moved to beta's $(mac beta 0) (gratuitous ARP), /store on $dev holds alpha's file ($before)"
wrote=$(await beta WROTE)
if [[ $backend == uring ]]; then
    # tandemd crashes on beta (kill -9) while /store is mounted on NBD; alpha is still off.
    t=$(date +%s.%N)
    restarted=$(await beta RESTARTED)
    say "beta: $restarted"
    [[ $(field stale "$restarted") == \"detached* ]] || die "beta's new tandemd did not detach the stale NBD mount (store.stale)"
    [[ $(field vip "$restarted") == 10.99.0.100/24 ]] || die "beta is ACTIVE again without the VIP"
    [[ $(field store "$restarted") == mounted ]] || die "/store is not mounted on beta after tandemd's restart"
    [[ $(field after "$restarted") == "$(field after "$wrote")" ]] || die "beta's file differs after tandemd's restart"
    [[ $(field watchdog "$restarted") == active,30s ]] ||
        die "beta's watchdog is \"$(field watchdog "$restarted")\" after tandemd's restart, not armed again (active,30s)"
    crash="tandemd killed on beta and back with /store in $(since "$t") s"
fi

# The old primary comes back: standby, delta only. With DRBD it then asks for
# all of its data again (discard-local without a split brain: invalidate).
boot alpha "$([[ $backend == drbd ]] && echo refill || echo rejoin)"
t=$(date +%s.%N)
back=$(await alpha STANDBY)
say "alpha: $back"
[[ -z $(field vip "$back") ]] || die "the returning alpha holds the VIP"
[[ $(field store "$back") == unmounted ]] || die "the returning alpha mounted /store"
rejoined=$(await alpha REJOINED)
resync=$(since "$t")
say "alpha: $rejoined"
resynced=$(await beta RESYNCED)
say "beta: $resynced"
[[ $resynced =~ Local:\ R:[A-Z]+\ S:ACTIVE ]] || die "beta is no longer ACTIVE after alpha's return (failback?)"
# SYNCHRONIZING is the standby's state while it receives the resync.
[[ $back =~ Local:\ R:[A-Z]+\ S:(STANDBY|SYNCHRONIZING)/ ]] || die "the returning alpha is not STANDBY"
[[ $rejoined =~ Local:\ R:[A-Z]+\ S:STANDBY/ ]] || die "the returning alpha is not STANDBY once in sync"
delta=$(sed -n 's/.*received \([0-9]*\) bytes.*/\1/p' <<< "$rejoined")
store_bytes=$(sfdisk -d "$out/disk.img" | awk -F'size= *' '/name="store"/ {split($2, a, ","); print a[1] * 512}')
if [[ $backend == uring ]]; then
    # The delta is the union of beta's writes since the takeover (its 8 MiB file,
    # ext4's journal and metadata) and alpha's activity log at the power cut: the
    # 4 MiB extents alpha wrote in its last 2 s, which can include all of its
    # 16 MiB file and the journal, depending on how soon the kill came. So it
    # varies from run to run (38 MB and 70 MB seen); a full resync is the whole
    # store, and half of it is a clear line between the two.
    [[ -n $delta ]] || die "no replication.sync_done with the bytes alpha received"
    ((delta * 2 < store_bytes)) || die "alpha received $delta bytes of the store's $store_bytes: not a delta resync"
    say "alpha received $delta bytes (the delta), not the whole store ($store_bytes bytes); its activity log at" \
        "the power cut marked $(field activity_log "$rejoined") bytes of it"
fi
wrote_after=$(field after "$wrote")
if [[ $backend == drbd ]]; then
    refilled=$(await alpha REFILLED)
    say "alpha: $refilled"
    full=$(sed -n 's/.*received \([0-9]*\) bytes.*/\1/p' <<< "$refilled")
    [[ -n $full ]] && ((full * 10 >= store_bytes * 9)) ||
        die "after discard-local alpha received ${full:-no} bytes, not the whole store ($store_bytes)"
    repair="discard-local (drbdadm invalidate) refilled ${full} bytes"
    reconnected=$(await alpha RECONNECTED)
    say "alpha: $reconnected"
    [[ $reconnected == *StandAlone* ]] || die "alpha reconnected, but its replication.reconnect does not name StandAlone"
    repair="$repair; DRBD StandAlone without its address, reconnected by tandemd"
fi

# Restore System: alpha is flattened to the factory image, given its identity
# again, and re-pairs; then the operator hands the service back to it.
if [[ $backend == uring ]]; then
    kill -9 "${pid[alpha]}"
    wait "${pid[alpha]}" 2>/dev/null || true
    unset 'pid[alpha]'
    t=$(date +%s.%N)
    printf 'flatten\n' | "$here/recovery/tandem-recovery" flatten --image "$out/disk.img" --target "$work/alpha.img" \
        > "$work/flatten.log" 2>&1 || { cat "$work/flatten.log"; die "flattening alpha's disk"; }
    "$here/recovery/tandem-recovery" provision --target "$work/alpha.img" --config "$work/config-alpha" \
        > "$work/provision-alpha.log" 2>&1 || { cat "$work/provision-alpha.log"; die "provisioning alpha again"; }
    flatten=$(since "$t")
    say "alpha flattened and provisioned in ${flatten} s: $(tail -1 "$work/flatten.log")"
    boot alpha repair
    t=$(date +%s.%N)
    rejoined=$(await alpha REJOINED)
    say "alpha: $rejoined"
    [[ $rejoined =~ Local:\ R:[A-Z]+\ S:STANDBY ]] || die "the restored alpha is not STANDBY"
    full=$(sed -n 's/.*received \([0-9]*\) bytes.*/\1/p' <<< "$rejoined")
    [[ -n $full ]] || die "no replication.sync_done on the restored alpha"
    [[ $rejoined =~ progress=\"[0-9]+\ of\ [0-9]+\ bytes\ durable\" ]] ||
        die "no resync progress (replication.checkpoint) on the restored alpha"
    took_back=$(await alpha TOOK-BACK)
    repair=$(since "$t")
    say "alpha: $took_back"
    [[ $(field vip "$took_back") == 10.99.0.100/24 ]] || die "the restored alpha took over without the VIP"
    [[ $(field before "$took_back") == "$before" ]] || die "the restored alpha's /store lacks alpha's first file"
    [[ $(field after "$took_back") == "$wrote_after" ]] || die "the restored alpha's /store lacks beta's file"
    [[ $(vip_mac) == "$(mac alpha 0)" ]] || die "the observer's ARP entry for the VIP is $(vip_mac), not alpha's"
    repair="${repair} s (${full} bytes received, flatten ${flatten} s)"

    # tandemd dies on the active alpha and systemd may not start it again: the
    # watchdog it left running (no magic close) must reset alpha. With
    # -no-reboot, the reset ends alpha's qemu.
    abandoned=$(await alpha ABANDONED)
    t=$(date +%s.%N)
    say "alpha: $abandoned"
    [[ $(field watchdog "$abandoned") == active,30s ]] || die "alpha's watchdog is not armed before tandemd's death"
    await_reset ABANDONED "tandemd's death"
    # Fed every second until the kill, so the reset comes about 30 s after it.
    awk -v s="$reset_after" 'BEGIN { exit !(s >= 20) }' ||
        die "alpha ended ${reset_after} s after tandemd's death: sooner than its watchdog's 30 s"
    # The kernel's word that the device was closed without the magic character.
    grep -aq "watchdog0: watchdog did not stop" <<< "$after_reset" ||
        die "alpha's kernel did not log \"watchdog did not stop!\" when tandemd died: was the watchdog stopped?"
    vip_on_beta
    reset="tandemd dead on alpha, watchdog reset ${reset_after} s later, the VIP on beta"
fi
if [[ $backend == drbd ]]; then
    # A clean stop of tandemd on a standby stops its watchdog.
    stopped=$(await alpha STOPPED)
    say "alpha: $stopped"
    [[ $(field watchdog "$stopped") == inactive,30s ]] ||
        die "alpha's watchdog is \"$(field watchdog "$stopped")\" after a clean stop of tandemd, not stopped (inactive,30s)"
    reset="a clean stop of tandemd stopped the watchdog"
fi
echo "image-test-ha ($backend) passed: boot to in-sync and READY ${boot_to_ready} s, failover ${failover} s (power cut" \
    "to /store mounted on beta), ${crash:+$crash, }rejoin and delta resync ${resync} s (${delta:-?} bytes), restore:" \
    "${repair}, ${reset}, total $(since "$t0") s"
