#!/usr/bin/env bash
# Wire-to-wire latency through the TCP gateway at a sweep of rates, beside a raw TCP echo
# round trip of the same frame size measured in the same run.
#
# Usage: scripts/bench-latency.sh [--durability none|batch|every] [--rates "10000 50000 flat"]
#                                 [--sessions N] [--duration SECONDS] [--out DIR]
#                                 [--serve-cores IDS --client-cores IDS]
# --serve-cores puts every thread of `serve` (`[pipeline.cores] service`) and of the echo
# server on the given cores (comma-separated ids); --client-cores puts loadgen's sessions and
# the echo's client connections on theirs. Both sides get the same placement. Default: all
# cores for everything.
# Writes DIR/results.md (a Markdown table), DIR/latency.png (all percentile curves) and the
# .hgrm/HDR log/SVG files of every run. The PNG plot needs gnuplot: without it the script
# says how to install it (Debian: apt-get install gnuplot-nox) and skips the PNG, unless
# --install-gnuplot (or CI=true) lets it install the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."

durability=none
rates="10000 50000 100000 200000 flat"
sessions=4
duration=10
out=bench-latency-out
serve_cores=""
client_cores=""
install_gnuplot=0
[ "${CI:-}" = "true" ] && install_gnuplot=1
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --install-gnuplot) install_gnuplot=1; shift ;;
        --durability) durability="$2"; shift 2 ;;
        --rates) rates="$2"; shift 2 ;;
        --sessions) sessions="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --serve-cores) serve_cores="$2"; shift 2 ;;
        --client-cores) client_cores="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$install_gnuplot" = 1 ]; then
        echo "bench-latency: installing gnuplot-nox for the plot (apt-get)"
        if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null
        else sudo apt-get update -qq && sudo apt-get install -y -qq gnuplot-nox >/dev/null; fi
    else
        echo "bench-latency: gnuplot is missing, so there will be no PNG plot; install it with" \
             "'apt-get install gnuplot-nox' (Debian), or run with --install-gnuplot" >&2
    fi
fi

cargo build --release -q -p ringmatch-server
bin=$PWD/target/release/ringmatch
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

logins=""
login_args=()
for account in $(seq 1 "$sessions"); do
    hash=$("$bin" hash-token "bench-token-$account")
    logins+=$'[[gateway.logins]]\n'"account = $account"$'\n'"$hash"$'\n'
    login_args+=(--login "$account:bench-token-$account")
done
cat > "$work/ringmatch.toml" <<TOML
[data]
dir = "$work/data"
[journal]
durability = "$durability"
[snapshots]
every_commands = 0
$([ -n "$serve_cores" ] && printf '[pipeline.cores]\nservice = [%s]\n' "$serve_cores")
[admin]
listen = "127.0.0.1:0"
[gateway]
enabled = true
listen = "127.0.0.1:0"
session_commands_per_second_max = 100000000
session_queue_depth_max = 1000000
$logins
[limits]
orders_per_book_max = 1000000
orders_max = 1000000
accounts_max = 1000
[[instruments]]
id = 1
symbol = "DEMO"
tick_size = 1
lot_size = 1
min_price = 1
max_price = 200000
max_qty = 1000000
TOML

{
    echo "| offered | pipeline | answered/s | p50 us | p90 us | p99 us | p99.9 us | max us |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
} > "$out/table.md"

client_args=()
[ -n "$client_cores" ] && client_args=(--cores "$client_cores")
echo_server_args=()
[ -n "$serve_cores" ] && echo_server_args=(--echo-server-cores "$serve_cores")
placement="all cores for every thread"
[ -n "$serve_cores$client_cores" ] && placement="serve and echo server on cores ${serve_cores:-all}, loadgen and echo client on cores ${client_cores:-all}"

plot_lines=()
for rate in $rates; do
    rm -rf "$work/data"
    "$bin" --config "$work/ringmatch.toml" serve 2> "$work/serve.log" &
    server_pid=$!
    for _ in $(seq 1 200); do grep -q "ringmatch: ready" "$work/serve.log" && break; sleep 0.05; done
    port=$(sed -n 's/^.* ringmatch: gateway listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/serve.log")
    rate_args=()
    [ "$rate" != flat ] && rate_args=(--rate "$rate")
    echo "== $rate: ringmatch ($sessions sessions, journal $durability)"
    "$bin" loadgen --gateway "127.0.0.1:$port" "${login_args[@]}" "${rate_args[@]}" "${client_args[@]}" --duration-secs "$duration" --out "$out/$rate" | tee "$work/load.txt"
    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
    echo "== $rate: raw TCP echo ($sessions connections)"
    echo_rate=("${rate_args[@]}")
    "$bin" loadgen --echo --echo-sessions "$sessions" "${echo_rate[@]}" "${client_args[@]}" "${echo_server_args[@]}" --duration-secs "$duration" --out "$out/$rate" | tee "$work/echo.txt"
    for name in ringmatch tcp-echo; do
        file=$work/load.txt; [ "$name" = tcp-echo ] && file=$work/echo.txt
        throughput=$(sed -n "s/^$name: .* answered, .* refused, \([0-9]*\) responses\/s.*/\1/p" "$file")
        read -r p50 p90 p99 p999 max < <(sed -n "s/^$name latency us: p50 \([0-9.]*\)  p90 \([0-9.]*\)  p99 \([0-9.]*\)  p99.9 \([0-9.]*\)  p99.99 [0-9.]*  max \([0-9.]*\)$/\1 \2 \3 \4 \5/p" "$file")
        echo "| $rate | $name | $throughput | $p50 | $p90 | $p99 | $p999 | $max |" >> "$out/table.md"
        plot_lines+=("'$out/$rate/$name.hgrm' every ::2 using (\$4 > 1e6 ? 1/0 : \$4):1 with lines title '$name $rate'")
    done
done

{
    echo "# Wire-to-wire latency"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, journal \`$durability\`, $sessions sessions, ${duration} s per rate,"
    echo "$placement,"
    echo "latency from intended send time to the first event of the response (ringmatch) or the"
    echo "echoed frame (tcp-echo), same frame size, same loopback."
    echo
    cat "$out/table.md"
} > "$out/results.md"

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "wrote $out/results.md (no latency.png: gnuplot is missing)"
    exit 0
fi
plot=$(IFS=,; echo "${plot_lines[*]}")
gnuplot <<GNUPLOT
set terminal pngcairo size 1100,650
set output '$out/latency.png'
set title 'Wire-to-wire latency by percentile (journal $durability)'
set logscale x
set logscale y
set xlabel 'percentile'
set ylabel 'latency (us)'
set xtics ("p0" 1, "p90" 10, "p99" 100, "p99.9" 1000, "p99.99" 10000, "p99.999" 100000)
set key outside right
set grid
plot $plot
GNUPLOT
echo "wrote $out/results.md and $out/latency.png"
