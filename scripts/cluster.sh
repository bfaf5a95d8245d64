#!/usr/bin/env bash
# A local three-node ringmatch cluster on loopback, for trying failover out.
#
# Usage: scripts/cluster.sh start|stop|status|kill N
#
# `start` builds `ringmatch` (release) and runs `serve` for config/examples/cluster/node1..3.toml
# (data in ./data/cluster/nodeN, logs in ./data/cluster/nodeN.log), each under a small
# supervisor loop that starts it again when it exits with status 3 (a leader that stepped
# down) or is killed, as systemd's Restart= would; `stop` stops the supervisors and the nodes
# cleanly (SIGTERM); `status` prints each node's role, term, leader and commit sequence
# (`ringmatch cluster status`); `kill N` kills node N with SIGKILL, to watch the others elect a
# new leader and the supervisor bring N back as a follower.
#
# RINGMATCH_BINARY=path runs that binary instead of building target/release/ringmatch
# (to compare two builds on the same cluster setup).
#
# Order entry: 127.0.0.1:8721..8723 (a follower answers `not_leader` with the leader's
# address); admin: http://127.0.0.1:8731..8733.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir=data/cluster
binary=${RINGMATCH_BINARY:-target/release/ringmatch}

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

supervise() {
    local node=$1
    local config=config/examples/cluster/node$node.toml
    local log=$run_dir/node$node.log
    local stopping=0
    trap 'stopping=1; if [ -n "${child:-}" ]; then kill -TERM "$child" 2>/dev/null || true; fi' TERM INT
    while [ "$stopping" -eq 0 ]; do
        "$binary" --config "$config" serve >>"$log" 2>&1 &
        child=$!
        echo "$child" >"$run_dir/node$node.pid"
        set +e
        wait "$child"
        status=$?
        # `wait` returns early when the trap fires: wait again for the node itself.
        if [ "$stopping" -eq 1 ]; then
            wait "$child" 2>/dev/null
        fi
        set -e
        if [ "$stopping" -eq 1 ]; then
            break
        fi
        echo "scripts/cluster.sh: node $node exited with status $status; starting it again" >>"$log"
        sleep 0.2
    done
    rm -f "$run_dir/node$node.pid"
}

case "${1:-}" in
    start)
        if [ -z "${RINGMATCH_BINARY:-}" ]; then
            cargo build --release --locked -q -p ringmatch-server
        fi
        mkdir -p "$run_dir"
        for node in 1 2 3; do
            if [ -f "$run_dir/supervisor$node.pid" ] && kill -0 "$(cat "$run_dir/supervisor$node.pid")" 2>/dev/null; then
                echo "node $node is already running (scripts/cluster.sh stop first)" >&2
                exit 1
            fi
            supervise "$node" </dev/null >/dev/null 2>&1 &
            echo $! >"$run_dir/supervisor$node.pid"
        done
        for _ in $(seq 1 100); do
            if "$binary" cluster status --admin 127.0.0.1:8731,127.0.0.1:8732,127.0.0.1:8733 2>/dev/null | grep -q leader; then
                break
            fi
            sleep 0.1
        done
        "$binary" cluster status --admin 127.0.0.1:8731,127.0.0.1:8732,127.0.0.1:8733
        ;;
    stop)
        for node in 1 2 3; do
            if [ -f "$run_dir/supervisor$node.pid" ]; then
                kill -TERM "$(cat "$run_dir/supervisor$node.pid")" 2>/dev/null || true
            fi
        done
        for node in 1 2 3; do
            if [ -f "$run_dir/supervisor$node.pid" ]; then
                pid=$(cat "$run_dir/supervisor$node.pid")
                while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
                rm -f "$run_dir/supervisor$node.pid"
            fi
        done
        echo "stopped"
        ;;
    status)
        "$binary" cluster status --admin 127.0.0.1:8731,127.0.0.1:8732,127.0.0.1:8733
        ;;
    kill)
        node="${2:?usage: scripts/cluster.sh kill N}"
        kill -KILL "$(cat "$run_dir/node$node.pid")"
        echo "killed node $node"
        ;;
    --help | -h | "")
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
