#!/usr/bin/env bash
# The seeded simulator (crates/sim): the real stages and start-up recovery over simulated
# storage, through crashes and faults, with its checkers on.
#
# Usage:
#   scripts/sim.sh --seeds N [--first S]   run N seeds (from S, default 0)
#   scripts/sim.sh --seed S                replay one seed and print what it did
#   ... --revert ack-at-submit|unsynced-snapshots|resend-as-new   turn a fix off, to see the checkers find it
#   ... --page-reorder   unsynced journal sectors survive a power loss in any order (a known gap)
#   scripts/sim.sh --cluster --seeds N | --seed S   the three-node cluster simulator
#   ... --cluster --revert ack-at-propose|ack-by-index|forget-vote|unsynced-journal
# A failure prints the exact command that replays it. Soak: scripts/sim.sh --seeds 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ] || [ $# -eq 0 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
cargo build --release --locked -q -p ringmatch-sim
exec target/release/ringmatch-sim "$@"
