#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors) and every test.
#
# Usage: scripts/test.sh
# Environment: PROPTEST_CASES (random streams in the property test, default 10000).
set -euo pipefail
case "${1:-}" in
    -h | --help)
        # The comment block at the top of this file.
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
esac
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "scripts/test.sh: cargo not found. Install Rust 1.85 or newer with rustup" \
             "(https://rustup.rs), then run this script again." >&2
        exit 1
    fi
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "scripts/test.sh: installing the $component component"
        rustup component add "$component"
    fi
done

# librdkafka (bundled by rdkafka) is built from source with the C toolchain.
missing=()
for tool in cc make perl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing a C toolchain for librdkafka (missing: ${missing[*]})"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq build-essential perl
fi

export PROPTEST_CASES="${PROPTEST_CASES:-10000}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "kafka: a real broker for the suite (scripts/kafka.sh; KAFKA_BOOTSTRAP=host:port uses yours)"
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
    KAFKA_BOOTSTRAP=$(bash scripts/kafka.sh start | tail -n 1)
    # Stop the broker however this script ends, tests passing or not.
    trap 'bash scripts/kafka.sh stop' EXIT
fi
export KAFKA_BOOTSTRAP
echo "broker at $KAFKA_BOOTSTRAP"
topic="ringmatch-smoke-$$"
bash scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --create --topic "$topic" --partitions 2 --replication-factor 1
bash scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --list | grep -qx "$topic"
bash scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --delete --topic "$topic"

step "cargo test (property test: $PROPTEST_CASES random streams)"
cargo test --workspace --locked --no-fail-fast

step "fuzz: order-entry frame decoder (30 s)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    bash scripts/fuzz.sh 30
else
    echo "SKIPPED: no nightly toolchain on this machine, so no libFuzzer run;" \
         "the decoder's exhaustive and random-input unit tests above still ran"
fi

step "all checks passed"
