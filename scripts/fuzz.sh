#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the order-entry frame decoder and the
# wire record decoders: fuzz/fuzz_targets/frame_decoder.rs.
#
# Usage: scripts/fuzz.sh [SECONDS]   (default 30; scripts/test.sh runs a short pass)
# Needs the nightly toolchain (libFuzzer instrumentation); installs cargo-fuzz if missing.
set -euo pipefail
case "${1:-}" in
    -h | --help)
        # The comment block at the top of this file.
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
esac
cd "$(dirname "$0")/.."
seconds="${1:-30}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "scripts/fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cd fuzz
mkdir -p corpus/frame_decoder
cargo +nightly fuzz run frame_decoder corpus/frame_decoder -- -max_total_time="$seconds" -max_len=4096
