#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors) and every test, with a real
# Kafka broker (scripts/kafka.sh, fetched through Maven) and a headless browser for the
# dashboard. It needs two Debian packages beyond Rust and Java: a C toolchain
# (build-essential perl) and chromium. With --install-missing, or under CI=true, it installs
# those that are missing with apt-get (and says so); otherwise it names them and stops.
#
# Usage: scripts/test.sh [--install-missing]
# Environment: PROPTEST_CASES (random streams in the property test, default 10000);
#   KAFKA_BOOTSTRAP (use your broker instead); RINGMATCH_CHROMIUM (a browser binary to use).
set -euo pipefail
install_missing=0
case "${1:-}" in
    -h | --help)
        # The comment block at the top of this file.
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    --install-missing) install_missing=1 ;;
    "") ;;
    *)
        echo "scripts/test.sh: unknown option $1 (try --help)" >&2
        exit 2
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

# Debian packages the suite needs: a C toolchain (librdkafka, bundled by rdkafka, is built
# from source) and chromium (the dashboard's browser test runs it headless). Installed with
# apt-get only under CI=true or with --install-missing; otherwise the script says what is
# missing and how to install it, and stops.
packages=()
for tool in cc make perl; do
    command -v "$tool" >/dev/null 2>&1 || { packages+=(build-essential perl); break; }
done
if ! command -v chromium >/dev/null 2>&1 && [ -z "${RINGMATCH_CHROMIUM:-}" ]; then
    packages+=(chromium)
fi
if [ ${#packages[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ] || [ "$install_missing" = 1 ]; then
        echo "scripts/test.sh: installing ${packages[*]} (apt-get install ${packages[*]})"
        sudo_cmd=()
        [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "scripts/test.sh: missing Debian packages: ${packages[*]}." \
             "Install them (sudo apt-get install ${packages[*]}), or run" \
             "scripts/test.sh --install-missing to have this script do it." >&2
        exit 1
    fi
fi
# With chromium here, the browser test must run, not skip.
export RINGMATCH_REQUIRE_BROWSER=1

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

echo "dashboard screenshot (a test artifact): target/test-artifacts/dashboard.png"

step "cargo install --path crates/server (into a temporary root, reusing this build)"
install_root=$(mktemp -d)
cargo install --quiet --path crates/server --locked --debug --root "$install_root" --target-dir target
(cd "$install_root" && ./bin/ringmatch --version \
    && ./bin/ringmatch config check "$OLDPWD/config/default.toml")
rm -rf "$install_root"

step "fuzz: order-entry frame decoder (30 s)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    bash scripts/fuzz.sh 30
else
    echo "SKIPPED: no nightly toolchain on this machine, so no libFuzzer run;" \
         "the decoder's exhaustive and random-input unit tests above still ran"
fi

step "all checks passed"
