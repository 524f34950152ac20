# scripts: shared by the demo and the benchmarks — alpha, beta and a client on one bridge, and their configuration.
# make_topology PREFIX sets hub, alpha, beta, client (namespace names) and the
# array `namespaces`, and joins them: alpha 10.77.0.1, beta 10.77.0.2 and
# client 10.77.0.10 on eth0, all ports of br0 in the hub namespace.
make_topology() {
    hub="$1-hub"; alpha="$1-alpha"; beta="$1-beta"; client="$1-client"
    namespaces=("$alpha" "$beta" "$client" "$hub")
    local ns port=0 pair
    for ns in "${namespaces[@]}"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
    ip -n "$hub" link add br0 type bridge && ip -n "$hub" link set br0 up
    for pair in "$alpha 10.77.0.1" "$beta 10.77.0.2" "$client 10.77.0.10"; do
        set -- $pair
        ip link add "p$port" netns "$hub" type veth peer name eth0 netns "$1"
        ip -n "$hub" link set "p$port" master br0 up
        ip -n "$1" addr add "$2/24" dev eth0
        ip -n "$1" link set eth0 up
        port=$((port + 1))
    done
}

# node_config CLUSTER NAME ROLE ADDRESS PEER PEER_ADDRESS WORKDIR [DEVICE]: a node's
# tandemd configuration on that topology (100 ms heartbeats, 300 ms timeout, the
# client as connectivity target), with its key, socket, boot id and replication
# metadata in WORKDIR; with DEVICE, /store on DEVICE is replicated (backend "uring")
# and mounted on WORKDIR/NAME-store on the active node.
node_config() {
    cat <<TOML
[cluster]
name = "$1"
vip = "10.77.0.100/24"
interface = "eth0"
[node]
name = "$2"
role = "$3"
address = "$4"
state_dir = "$7"
[peer]
name = "$5"
address = "$6"
[heartbeat]
interval = "100ms"
timeout = "300ms"
[connectivity]
targets = ["10.77.0.10"]
timeout = "200ms"
[auth]
key_file = "$7/cluster.key"
[replication]
$(if [[ -n "${8:-}" ]]; then printf 'backend = "uring"\ndevice = "%s"\nmetadata = "%s/%s.meta"\nrate = 4096\n[store]\nmount = "%s/%s-store"' "$8" "$7" "$2" "$7" "$2"; else echo 'backend = "none"'; fi)
[control]
socket = "$7/$2.sock"
TOML
}
