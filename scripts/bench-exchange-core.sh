#!/usr/bin/env bash
# ringmatch's matcher beside exchange-core 0.5.3's OrderBookDirectImpl, single-threaded each,
# on the same stream file (docs/stream-format.md), in alternating invocations: for each pair,
# `ringmatch bench --matcher-only --stream FILE` (median of its runs) and the Java harness in
# bench/exchange-core (its JVM warmed up by untimed passes first, then the median of its
# timed passes); prints each pair's ratio and the median of the ratios.
#
# Usage: scripts/bench-exchange-core.sh [--pairs N] [--commands N] [--seed S] [--passes N]
#   --pairs N     alternating pairs (default 7)
#   --commands N  commands in the stream (default 2000000, as ringmatch bench --matcher-only)
#   --seed S      the mix's seed (default 1)
#   --passes N    timed runs per invocation on each side (default 5; exchange-core also does
#                 N untimed warm-up passes)
# Needs Java 17 and Maven (exchange-core and its dependencies come from Maven Central), and
# builds the release binary. Writes bench-out/exchange-core/ (the stream and each run's output).
set -euo pipefail
pairs=7 commands=2000000 seed=1 passes=5
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        --pairs) pairs=$2; shift 2 ;;
        --commands) commands=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --passes) passes=$2; shift 2 ;;
        *) echo "bench-exchange-core: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
for tool in java mvn cargo; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "bench-exchange-core: $tool is needed (Java 17, Maven, Rust)" >&2
        exit 1
    }
done
out=bench-out/exchange-core
mkdir -p "$out"
cargo build --release -p ringmatch-server --locked
binary=target/release/ringmatch
stream="$out/mix-seed$seed-$commands.stream"
"$binary" bench --matcher-only --commands "$commands" --seed "$seed" --write-stream "$stream"
(cd bench/exchange-core && mvn -q -B package \
    && mvn -q -B dependency:build-classpath -Dmdep.outputFile=target/classpath.txt)
classpath="bench/exchange-core/target/exchange-core-harness-1.jar:$(cat bench/exchange-core/target/classpath.txt)"

ratios=()
for pair in $(seq 1 "$pairs"); do
    "$binary" bench --matcher-only --stream "$stream" --runs "$passes" --naive-commands 1000 \
        > "$out/ringmatch-$pair.txt"
    java -Xms4g -Xmx4g -cp "$classpath" ringmatch.bench.Harness "$stream" "$passes" "$passes" \
        > "$out/exchange-core-$pair.txt"
    ours=$(awk '/^fast engine/ { print $5 }' "$out/ringmatch-$pair.txt")
    theirs=$(awk '/^exchange-core: median/ { print $3 }' "$out/exchange-core-$pair.txt")
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
    ratios+=("$ratio")
    echo "pair $pair: ringmatch $ours commands/s, exchange-core $theirs commands/s, ratio $ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
echo "ratios: ${ratios[*]}"
echo "median ratio (ringmatch / exchange-core): $median"
