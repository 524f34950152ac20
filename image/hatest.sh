#!/bin/sh
# image: the guest's half of the two-guest test (image/test-ha.sh). Runs only
# with tandem.hatest=STEP on the kernel command line (tandem-hatest.service) and
# reports on the serial console, one "TANDEM-HATEST <node> <what>" line a step:
#   primary  wait ACTIVE, wait until /store is in sync with the peer, (uring)
#            fstrim /store, still in sync after it, wait for the trimmed extents
#            to go cold in the activity log; write /store/hatest/before durably,
#            report READY; then the host cuts power
#   standby  wait STANDBY, report; wait ACTIVE (the takeover), check /store,
#            report TOOK-OVER; write /store/hatest/after, report WROTE; (uring)
#            kill -9 tandemd: systemd starts it again, it detaches the stale
#            NBD mount and takes /store again, report RESTARTED; follow the
#            resync to the returning old primary, report RESYNCED
#   rejoin   the old primary back: wait STANDBY (no automatic failback), follow
#            the delta resync, report REJOINED with the bytes it received
#   repair   the same on a flattened and re-provisioned node ("Restore System"),
#            then a manual takeover: report TOOK-BACK with /store's files;
#            then tandemd dies for good (Restart=no, kill -9): report
#            ABANDONED, and the watchdog resets this guest
#   refill   the same as rejoin, then `tandemctl discard-local` without a split
#            brain (DRBD: drbdadm invalidate): report REFILLED with the bytes of
#            the full resync that follows; then the crossover address goes away
#            until DRBD gives up (StandAlone: it cannot bind it) and comes back:
#            tandemd reconnects DRBD, report RECONNECTED; stop tandemd, report
#            STOPPED with the watchdog's state
#   sharedactive   (backend "shared") wait ACTIVE: the lease taken, the file
#            system created on the shared store, /store mounted; write
#            /store/hatest/before durably, report READY; then the host hangs
#            this guest's storage path: wait for watchdog.starving, report
#            STARVING; the watchdog resets this guest
#   sharedstandby  wait STANDBY, report; wait ACTIVE (the takeover once the
#            peer's lease expired), report TOOK-OVER with /store's file
# A wait that runs out reports FAIL with tandemd's journal, well inside the
# host's time limit, so the host's log says why.
ctl="/usr/sbin/tandemctl -c /etc/tandem/tandem.toml"
step=$(sed -n 's/.*tandem\.hatest=\([a-z]*\).*/\1/p' /proc/cmdline)
node=$(uname -n)
say() { echo "TANDEM-HATEST $node $*" > /dev/ttyS0; }
fail() {
    say "FAIL $*"
    journalctl -b --no-pager -n 80 -u tandemd > /dev/ttyS0 2>&1
    $ctl events --backlog 40 > /dev/ttyS0 2>&1
    { ip -br addr; cat /proc/drbd; } > /dev/ttyS0 2>&1
    say "FAIL $*"  # again, below the journal: the host may show only the end
    exit 1
}
vip() { ip -4 -o addr show dev eth0 label eth0:0 | awk '{print $4}'; }
sum() { sha256sum "$1" 2>/dev/null | cut -c1-16; }
# The watchdog tandemd arms ([watchdog]): "active,30s" once armed, "inactive,30s" once stopped.
wd() { w=/sys/class/watchdog/watchdog0; [ -r $w/state ] && echo "$(cat $w/state),$(cat $w/timeout)s" || echo none; }
store() { if mountpoint -q /store; then echo "mounted dev=$(findmnt -no SOURCE /store)"; else echo unmounted; fi; }
# Shows the resync while it runs; the `sync --timeout 10s` after it checks the outcome.
progress() { $ctl sync --timeout 600s 2>&1 | while read -r l; do say "sync: $l"; done; }
# ACTIVE is the state from the claim on; the acquire sequence (mount /store,
# the VIP, services, announce) ends with the event failover.complete.
acquired() { $ctl wait event=failover.complete --since 0 --timeout 120s > /dev/null || fail "acquire did not complete"; }

case $step in
primary)
    $ctl wait state=ACTIVE --timeout 300s > /dev/null || fail "not ACTIVE: $($ctl cstate 2>&1)"
    acquired
    progress
    $ctl sync --timeout 10s > /dev/null || fail "not in sync with the peer"
    mountpoint -q /store || fail "/store is not mounted on the active node"
    trimmed=none
    if grep -q '^backend = "uring"' /etc/tandem/tandem.toml; then
        # Discards through nbd.ko: ext4's first fstrim after a mount trims all its
        # free space, each NBD_CMD_TRIM becomes the engine's zero(), replicated live.
        out=$(fstrim -v /store 2>&1) || fail "fstrim /store: $out"
        trimmed=$(echo "$out" | sed -n 's/.*(\([0-9]*\) bytes) trimmed.*/\1/p')
        $ctl sync --timeout 10s > /dev/null || fail "not in sync with the peer after fstrim"
        # The trim made its extents hot in the activity log, and a crash resends
        # every hot extent. The power cut below must find them cold (idle 2 s,
        # dropped at the next ping), as they would be long after a real trim.
        # What ext4 keeps writing (its journal) may stay hot: 4 extents, 16 MiB.
        hot() { $ctl status --json | tr -d ' \n' | sed -n 's/.*"hot_extents":\([0-9]*\).*/\1/p'; }
        for _ in $(seq 300); do
            [ "$(hot)" -le 4 ] 2>/dev/null && break
            sleep 0.2  # paces the polling of the engine's state; the bound is the loop's 60 s
        done
        [ "$(hot)" -le 4 ] 2>/dev/null || fail "the activity log still has $(hot) hot extents 60 s after fstrim"
    fi
    mkdir -p /store/hatest
    head -c 16M /dev/urandom > /store/hatest/before && sync /store/hatest/before || fail "writing /store"
    say "READY vip=$(vip) store=$(store) watchdog=$(wd) before=$(sum /store/hatest/before) trimmed=${trimmed:-unreadable} $($ctl cstate)"
    ;;
standby)
    $ctl wait state=STANDBY --timeout 300s > /dev/null || fail "not STANDBY: $($ctl cstate 2>&1)"
    # The replication engine's name for this node's volume (uring: recorded in new metadata).
    volume=$(journalctl -b -u tandemd -o cat | sed -n 's/.*volume identity recorded in [^:]*: //p' | head -1 | tr ' ' ':')
    say "STANDBY vip=$(vip) store=$(store) volume=${volume:-none} $($ctl cstate)"
    $ctl wait state=ACTIVE --timeout 120s > /dev/null || fail "no takeover: $($ctl cstate 2>&1)"
    acquired
    say "TOOK-OVER vip=$(vip) store=$(store) before=$(sum /store/hatest/before) $($ctl cstate)"
    head -c 8M /dev/urandom > /store/hatest/after && sync /store/hatest/after || fail "writing /store"
    say "WROTE after=$(sum /store/hatest/after)"
    if grep -q '^backend = "uring"' /etc/tandem/tandem.toml; then
        # tandemd crashes on the active node (the peer still down): systemd starts
        # it again, and the new one finds /store on an NBD device that nobody
        # serves, detaches it (store.stale), claims again and mounts /store afresh.
        old=$(systemctl show -p MainPID --value tandemd)
        kill -9 "$old"
        i=0
        while :; do
            new=$(systemctl show -p MainPID --value tandemd)
            [ "$new" != 0 ] && [ "$new" != "$old" ] && $ctl cstate > /dev/null 2>&1 && break
            i=$((i + 1)); [ $i -lt 600 ] || fail "tandemd was not started again after kill -9"
            sleep 0.2  # paces the look at systemd only
        done
        $ctl wait state=ACTIVE --timeout 120s > /dev/null || fail "not ACTIVE again after the restart: $($ctl cstate 2>&1)"
        acquired
        stale=$(journalctl -b -u tandemd -o cat | grep -o 'detached /store left mounted on /dev/nbd[^,;]*' | tail -1)
        say "RESTARTED stale=\"$stale\" watchdog=$(wd) vip=$(vip) store=$(store) after=$(sum /store/hatest/after) $($ctl cstate)"
    fi
    $ctl wait state=ACTIVE --timeout 1s > /dev/null || fail "no longer ACTIVE"
    progress
    $ctl sync --timeout 10s > /dev/null || fail "not in sync with the returning peer"
    say "RESYNCED vip=$(vip) store=$(store) $($ctl cstate)"
    ;;
rejoin | repair | refill)
    $ctl wait state=STANDBY --timeout 300s > /dev/null || fail "not STANDBY: $($ctl cstate 2>&1)"
    # The replication engine's name for this node's volume (uring: recorded in new metadata).
    volume=$(journalctl -b -u tandemd -o cat | sed -n 's/.*volume identity recorded in [^:]*: //p' | head -1 | tr ' ' ':')
    say "STANDBY vip=$(vip) store=$(store) volume=${volume:-none} $($ctl cstate)"
    progress
    $ctl sync --timeout 10s > /dev/null || fail "not in sync after rejoining"
    # SYNCHRONIZING while the resync runs; STANDBY once it is over.
    $ctl wait state=STANDBY --timeout 60s > /dev/null || fail "not STANDBY once in sync: $($ctl cstate 2>&1)"
    got=$($ctl events --backlog 200 | grep -F replication.sync_done | tail -1)
    # The resync's progress as the event stream recorded it (the first checkpoint,
    # a second in): a short resync may be over before `tandemctl sync` looks.
    ck=$($ctl events --backlog 500 | grep -F replication.checkpoint | head -1 | grep -o '[0-9]* of [0-9]* bytes durable')
    # What this node's own activity log added to the resync after a crash as primary (uring).
    al=$(journalctl -b -u tandemd -o cat | sed -n 's/.*activity log marks \([0-9]*\) bytes.*/\1/p' | head -1)
    say "REJOINED vip=$(vip) store=$(store) activity_log=${al:-0} $($ctl cstate) progress=\"$ck\" $got"
    if [ "$step" = refill ]; then
        seq=$($ctl events --backlog 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
        $ctl discard-local > /dev/null 2>&1 || fail "discard-local refused: $($ctl discard-local 2>&1)"
        $ctl wait event=replication.sync_done --since "$seq" --timeout 600s > /dev/null || fail "no resync after discard-local"
        progress
        got=$($ctl events --backlog 200 | grep -F replication.sync_done | tail -1)
        say "REFILLED vip=$(vip) store=$(store) $($ctl cstate) $got"
        # DRBD binds its crossover address for every connection attempt; without
        # it DRBD stops trying for good. tandemd must bring it back.
        xo=$(ip -4 -o addr show dev eth1 | awk '{print $4}')
        [ -n "$xo" ] || fail "eth1 has no address"
        seq=$($ctl events --backlog 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
        ip addr del "$xo" dev eth1 || fail "removing $xo from eth1"
        $ctl wait event=replication.reconnect --since "$seq" --timeout 120s > /dev/null ||
            fail "DRBD without its address: no replication.reconnect ($(cat /proc/drbd | sed -n 's/.*\(cs:[A-Za-z]*\).*/\1/p'))"
        gave_up=$($ctl events --backlog 50 | grep -F replication.reconnect | tail -1 | sed -n 's/.*"message":"\([^"]*\)".*/\1/p')
        ip addr add "$xo" dev eth1 || fail "adding $xo to eth1 again"
        progress
        $ctl sync --timeout 10s > /dev/null || fail "DRBD not connected and in sync after the address came back"
        say "RECONNECTED $($ctl cstate) gave-up=\"$gave_up\""
        systemctl stop tandemd || fail "systemctl stop tandemd"
        say "STOPPED watchdog=$(wd)"
        exit 0
    fi
    [ "$step" = repair ] || exit 0
    $ctl takeover > /dev/null 2>&1 || fail "takeover refused: $($ctl takeover 2>&1)"
    $ctl wait state=ACTIVE --timeout 120s > /dev/null || fail "not ACTIVE after the takeover: $($ctl cstate 2>&1)"
    acquired
    say "TOOK-BACK vip=$(vip) store=$(store) before=$(sum /store/hatest/before) after=$(sum /store/hatest/after) $($ctl cstate)"
    # tandemd dies and may not come back: its watchdog, left running without the
    # magic close, must reset this host (the host watches this qemu end).
    mkdir -p /run/systemd/system/tandemd.service.d
    printf '[Service]\nRestart=no\n' > /run/systemd/system/tandemd.service.d/hatest-no-restart.conf
    systemctl daemon-reload || fail "systemctl daemon-reload"
    pid=$(systemctl show -p MainPID --value tandemd)
    say "ABANDONED tandemd=$pid watchdog=$(wd)"
    kill -9 "$pid"
    ;;
sharedactive)
    $ctl wait state=ACTIVE --timeout 300s > /dev/null || fail "not ACTIVE: $($ctl cstate 2>&1)"
    acquired
    mountpoint -q /store || fail "/store is not mounted on the active node"
    mkdir -p /store/hatest
    head -c 8M /dev/urandom > /store/hatest/before && sync /store/hatest/before || fail "writing /store"
    seq=$($ctl events --backlog 1 | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
    say "READY vip=$(vip) store=$(store) watchdog=$(wd) before=$(sum /store/hatest/before) $($ctl cstate)"
    # The host now hangs the path to the shared disks. Nothing here touches them.
    $ctl wait event=watchdog.starving --since "$seq" --timeout 120s > /dev/null ||
        fail "no watchdog.starving after the storage path hung"
    msg=$($ctl events --backlog 50 | grep -F watchdog.starving | tail -1 | sed -n 's/.*"message":"\([^"]*\)".*/\1/p')
    say "STARVING \"$msg\""
    ;;
sharedstandby)
    $ctl wait state=STANDBY --timeout 300s > /dev/null || fail "not STANDBY: $($ctl cstate 2>&1)"
    say "STANDBY vip=$(vip) store=$(store) watchdog=$(wd) $($ctl cstate)"
    $ctl wait state=ACTIVE --timeout 300s > /dev/null || fail "no takeover: $($ctl cstate 2>&1)"
    acquired
    say "TOOK-OVER vip=$(vip) store=$(store) before=$(sum /store/hatest/before) $($ctl cstate)"
    ;;
*)
    fail "unknown step \"$step\" (tandem.hatest=primary|standby|rejoin|repair|refill|sharedactive|sharedstandby)"
    ;;
esac
