#!/usr/bin/env bash
# Failover time of a local three-node cluster: kill -9 of the leader under load to the first
# acknowledged order on the new leader, over N failovers (median, min, max).
#
# Usage: scripts/bench-failover.sh [--rounds N] [--freeze]   (default 20 rounds)
#
# Runs `ringmatch bench-failover`: the members of config/examples/cluster (their timeouts:
# 10 ms ticks, election after 30 to 60 ticks, heartbeats every 5) as child processes with
# data in a temporary directory; uses the loopback ports of those files (8721..8743), so
# scripts/cluster.sh must not be running. --freeze stops the leader (SIGSTOP) instead of
# killing it: a silent host, found only by the election timeout. Figures: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=20
freeze=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --freeze) freeze=(--freeze); shift ;;
        --help | -h) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
cargo build --release --locked -q -p ringmatch-server
exec target/release/ringmatch bench-failover --rounds "$rounds" "${freeze[@]}"
