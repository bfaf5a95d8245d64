#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, single node, 4.3.1) for tests and local use.
#
# Usage: scripts/kafka.sh start|stop|restart|status
#        scripts/kafka.sh tool CLASS [ARGS...]   (runs a Kafka tool class, e.g.
#        org.apache.kafka.tools.TopicCommand, with the cached jars)
#
# `start` resolves Kafka's jars through Maven into a cache outside the source tree
# ($RINGMATCH_KAFKA_CACHE, default ~/.cache/ringmatch/kafka-4.3.1; offline once cached), formats
# a fresh storage directory, starts a combined broker+controller with the machine's Java on
# loopback ports that do not clash with a default Kafka (broker 19092, controller 19093;
# $RINGMATCH_KAFKA_PORT moves both), waits until it answers and prints the bootstrap address.
# Settings suit a 2-core machine: a small heap, replication factor 1 and transaction state log
# min ISR 1. `stop` stops it cleanly (SIGTERM, then waits). `restart` stops it and starts it
# again on the same storage (topics and transactions kept), as the broker-restart test needs. Tests use KAFKA_BOOTSTRAP=host:port
# to point at an existing broker instead.
set -euo pipefail
case "${1:-}" in
    -h | --help)
        # The comment block at the top of this file.
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
esac

version=4.3.1
cache="${RINGMATCH_KAFKA_CACHE:-$HOME/.cache/ringmatch/kafka-$version}"
port="${RINGMATCH_KAFKA_PORT:-19092}"
controller_port=$((port + 1))
run="${RINGMATCH_KAFKA_RUN:-${TMPDIR:-/tmp}/ringmatch-kafka-$port}"
pid_file="$run/kafka.pid"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "scripts/kafka.sh: $1 is needed: install $2 (Debian: apt-get install $3)" >&2
        exit 1
    fi
}

fetch() {
    if [ -f "$cache/.complete" ]; then
        return
    fi
    need java "a Java 17 runtime" openjdk-17-jre-headless
    need mvn "Apache Maven" maven
    echo "scripts/kafka.sh: resolving Kafka $version through Maven into $cache"
    mkdir -p "$cache/lib"
    cat > "$cache/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ringmatch</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.26.1</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.26.1</version></dependency>
  </dependencies>
</project>
POM
    mvn -q -B -f "$cache/pom.xml" dependency:copy-dependencies -DoutputDirectory="$cache/lib" -DincludeScope=runtime
    touch "$cache/.complete"
}

running() {
    [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && \
        grep -q "Kafka Server started" "$run/kafka.log" 2>/dev/null
}

# start [keep]: a fresh, empty broker; with "keep", the storage of the last run is kept (restart).
start() {
    if running; then
        echo "127.0.0.1:$port"
        return
    fi
    fetch
    need java "a Java 17 runtime" openjdk-17-jre-headless
    local keep=${1:-}
    if [ "$keep" != keep ] || [ ! -f "$run/formatted" ]; then
        keep=
        rm -rf "$run"
    fi
    mkdir -p "$run/data"
    cat > "$run/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
    cat > "$run/log4j2.properties" <<LOG
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$run/kafka.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
LOG
    local classpath="$cache/lib/*"
    local java_options=(-Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$run/log4j2.properties")
    if [ -z "$keep" ]; then
        java "${java_options[@]}" -cp "$classpath" kafka.tools.StorageTool format \
            --config "$run/server.properties" --cluster-id "$(java -cp "$classpath" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
            >"$run/format.log" 2>&1 || {
            echo "scripts/kafka.sh: formatting the storage failed:" >&2
            cat "$run/format.log" >&2
            exit 1
        }
        touch "$run/formatted"
    fi
    : > "$run/kafka.log"
    nohup java "${java_options[@]}" -cp "$classpath" kafka.Kafka "$run/server.properties" \
        >"$run/stdout.log" 2>&1 &
    echo $! > "$pid_file"
    for _ in $(seq 1 600); do
        if answers; then
            echo "127.0.0.1:$port"
            return
        fi
        if ! running; then
            echo "scripts/kafka.sh: the broker exited while starting:" >&2
            tail -n 30 "$run/stdout.log" "$run/kafka.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
    echo "scripts/kafka.sh: the broker did not answer within 60 s" >&2
    stop
    exit 1
}

stop() {
    if ! running; then
        rm -f "$pid_file"
        return
    fi
    local pid
    pid=$(cat "$pid_file")
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start keep ;;
    tool)
        shift
        fetch
        quiet="$cache/tool-log4j2.properties"
        [ -f "$quiet" ] || printf '%s\n' 'rootLogger.level=WARN' 'rootLogger.appenderRef.err.ref=err' \
            'appender.err.type=Console' 'appender.err.name=err' 'appender.err.target=SYSTEM_ERR' \
            'appender.err.layout.type=PatternLayout' 'appender.err.layout.pattern=%p %m%n' > "$quiet"
        exec java -Xmx256m -Dlog4j2.configurationFile="$quiet" -cp "$cache/lib/*" "$@" ;;
    status)
        if running && answers; then echo "running: 127.0.0.1:$port (pid $(cat "$pid_file"))"; else echo "stopped"; exit 1; fi ;;
    *) echo "usage: scripts/kafka.sh start|stop|restart|status|tool CLASS [ARGS...]" >&2; exit 2 ;;
esac
