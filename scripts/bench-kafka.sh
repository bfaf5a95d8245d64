#!/usr/bin/env bash
# ringmatch's Kafka output against Kafka's own producer performance tool, on the same broker,
# with the same record count and record size, in one run.
#
# Usage: scripts/bench-kafka.sh [COMMANDS] [REPEATS]
#
# For each delivery (exactly_once, at_least_once) and each repeat (default 3), it runs
#   ringmatch bench --kafka ... flat out (the whole pipeline, journal policy none, publishing
#   every event of COMMANDS exchange-core commands, default 300,000, as 128-byte records), then
#   org.apache.kafka.tools.ProducerPerformance with --num-records = the records ringmatch
#   committed, --record-size 128, acks=all, idempotence on, linger.ms=5 (both sides), and for
#   exactly_once a transaction every 20 ms (ringmatch's commit interval); the tool's figure is
#   its steady-state line, after the first fifth of the records (--warmup-records), so the JVM's
#   warm-up does not count against it,
# and prints the ratio of the median records/s. It then measures ringmatch's output lag
# (ingress to committed) at a steady 20,000 commands/s. Results: bench-out/kafka/results.md.
# Uses KAFKA_BOOTSTRAP if set, otherwise starts (and stops) scripts/kafka.sh's broker.
set -euo pipefail
case "${1:-}" in
    -h | --help)
        # The comment block at the top of this file.
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
esac
cd "$(dirname "$0")/.."

commands=${1:-300000}
repeats=${2:-3}
out=bench-out/kafka
mkdir -p "$out"
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
    KAFKA_BOOTSTRAP=$(bash scripts/kafka.sh start | tail -n 1)
    trap 'bash scripts/kafka.sh stop' EXIT
fi
echo "broker at $KAFKA_BOOTSTRAP"
cargo build --release --locked -p ringmatch-server
bin=target/release/ringmatch

value() { grep "^$1: " "$2" | cut -d' ' -f2; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

{
    echo "# Kafka output: ringmatch against ProducerPerformance"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, broker $KAFKA_BOOTSTRAP (scripts/kafka.sh: Kafka 4.3.1, one node)."
    echo "Command: \`scripts/bench-kafka.sh $commands $repeats\`. Records of 128 bytes, acks=all, idempotent,"
    echo "linger.ms=5; exactly_once commits every 20 ms on both sides. ProducerPerformance figures are its"
    echo "steady-state line (after --warmup-records of one fifth). Medians of $repeats runs each."
    echo
    echo "| delivery | records | ringmatch records/s (runs) | ProducerPerformance records/s (runs) | ratio of medians | output lag p50 / p99 at 20k commands/s |"
    echo "|---|---|---|---|---|---|"
} > "$out/results.md"

for delivery in exactly_once at_least_once; do
    ours=""
    theirs=""
    records=0
    for run in $(seq 1 "$repeats"); do
        log="$out/ringmatch-$delivery-$run.txt"
        "$bin" bench --kafka "$KAFKA_BOOTSTRAP" --delivery "$delivery" --commands "$commands" \
            --out "$out" > "$log"
        records=$(value records "$log")
        rate=$(value records_per_second "$log")
        ours="$ours $rate"

        topic="ringmatch-bench-tool.$(date +%s%N)"
        bash scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
            --create --topic "$topic" --partitions 4 --replication-factor 1 > /dev/null
        transactions=()
        if [ "$delivery" = exactly_once ]; then
            transactions=(--transactional-id "tool-$topic" --transaction-duration-ms 20)
        fi
        tool_log="$out/tool-$delivery-$run.txt"
        bash scripts/kafka.sh tool org.apache.kafka.tools.ProducerPerformance --topic "$topic" \
            --num-records "$records" --warmup-records $((records / 5)) --record-size 128 --throughput -1 \
            --command-property bootstrap.servers="$KAFKA_BOOTSTRAP" acks=all enable.idempotence=true linger.ms=5 \
            "${transactions[@]}" > "$tool_log"
        tool_rate=$(grep 'records sent' "$tool_log" | tail -n 1 | sed -E 's/.* ([0-9.]+) records\/sec.*/\1/')
        theirs="$theirs $tool_rate"
        echo "$delivery run $run: ringmatch $rate records/s, ProducerPerformance $tool_rate records/s ($records records)"
    done
    ours_median=$(echo "$ours" | median)
    theirs_median=$(echo "$theirs" | median)
    ratio=$(awk -v a="$ours_median" -v b="$theirs_median" 'BEGIN { printf "%.2f", a / b }')

    lag_log="$out/ringmatch-$delivery-lag.txt"
    "$bin" bench --kafka "$KAFKA_BOOTSTRAP" --delivery "$delivery" --rate 20000 --commands 200000 \
        --out "$out" > "$lag_log"
    lag="$(value lag_p50_ms "$lag_log") ms / $(value lag_p99_ms "$lag_log") ms"
    echo "$delivery: ratio of medians $ratio; output lag at 20k commands/s p50 / p99: $lag"
    echo "| $delivery | $records | $ours_median ($ours ) | $theirs_median ($theirs ) | $ratio | $lag |" >> "$out/results.md"
done
echo
cat "$out/results.md"
