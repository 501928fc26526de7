#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM), jars from Maven Central.
# Usage: kafka.sh fetch|start|stop|restart|status|reset   (see `kafka.sh help` for the environment)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LIBS="$HERE/libs"

PORT="${TAGSTREAM_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${TAGSTREAM_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
# One data directory per port by default, so a second broker on another port never shares state.
DATA="${TAGSTREAM_KAFKA_DATA:-$HERE/data/port-$PORT}"
DATA="${DATA%/}"
START_TIMEOUT="${TAGSTREAM_KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${TAGSTREAM_KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${TAGSTREAM_KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"

PIDFILE="$DATA/kafka.pid"
LOGFILE="$DATA/kafka.log"
PROPS="$DATA/server.properties"
LOGDIRS="$DATA/kraft"
BOOTSTRAP="127.0.0.1:$PORT"

say() { echo "kafka.sh: $*"; }
die() { echo "kafka.sh: $1" >&2; exit "${2:-1}"; }

usage() {
    cat <<EOF
usage: kafka.sh {fetch|start|stop|restart|status|reset}
  fetch    resolve the broker jars into libs/ with Maven (skipped when libs/ matches pom.xml)
  start    fetch if needed, format storage once, start in the background, wait until it answers
  stop     SIGTERM, wait up to \$TAGSTREAM_KAFKA_STOP_TIMEOUT s ($STOP_TIMEOUT), then SIGKILL
  restart  stop then start, keeping data
  status   exit 0 and say so when running and answering, 3 when stopped, 1 when not answering
  reset    stop and delete the data directory
environment:
  TAGSTREAM_KAFKA_PORT             PLAINTEXT port on 127.0.0.1 (9092)
  TAGSTREAM_KAFKA_CONTROLLER_PORT  KRaft controller port (PORT+1)
  TAGSTREAM_KAFKA_DATA             data dir: storage, server.properties, kafka.log, kafka.pid
                                   (deploy/kafka/data/port-PORT)
  TAGSTREAM_KAFKA_START_TIMEOUT    seconds to wait for the broker to answer ($START_TIMEOUT)
  TAGSTREAM_KAFKA_HEAP_OPTS        JVM heap flags ($HEAP_OPTS)
  TAGSTREAM_PYTHON                 Python with aiokafka for the readiness probe
                                   (default: the repo's .venv, else python3; else a Java probe)
EOF
}

# --- jars -------------------------------------------------------------------------------------

pom_stamp() { sha256sum "$HERE/pom.xml" | cut -d' ' -f1; }

libs_complete() { [[ -f "$LIBS/.complete" && "$(cat "$LIBS/.complete")" == "$(pom_stamp)" ]]; }

cmd_fetch() {
    mkdir -p "$HERE/data"
    exec 8>"$HERE/data/.fetch.lock"
    flock 8
    if libs_complete; then
        say "libs/ is up to date ($(find "$LIBS" -name '*.jar' | wc -l) jars)"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found; install Maven 3.8+ to fetch the broker jars"
    say "resolving Kafka jars from Maven Central into libs/ ..."
    # Into a scratch dir first (under the git-ignored data/), so an interrupted fetch never looks complete.
    local tmp="$HERE/data/.libs.tmp"
    rm -rf "$tmp"
    mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$tmp" \
        >"$HERE/data/fetch.log" 2>&1 \
        || { tail -n 40 "$HERE/data/fetch.log" >&2; die "mvn dependency:copy-dependencies failed (log: deploy/kafka/data/fetch.log)"; }
    pom_stamp >"$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1))"
}

# --- process ------------------------------------------------------------------------------------

read_pid() { [[ -f "$PIDFILE" ]] && cat "$PIDFILE" 2>/dev/null || true; }

# Alive and still our broker: a reused pid, or an unreaped zombie (empty cmdline), is not.
is_broker_pid() {
    local pid="$1"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka '
}

running_pid() {
    local pid
    pid="$(read_pid)"
    if is_broker_pid "$pid"; then echo "$pid"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

find_python() {
    local c
    for c in "${TAGSTREAM_PYTHON:-}" "$REPO/.venv/bin/python" python3; do
        [[ -n "$c" ]] && command -v "$c" >/dev/null 2>&1 && "$c" -c 'import aiokafka' 2>/dev/null \
            && { echo "$c"; return 0; }
    done
    return 1
}

# A metadata request must list our broker: a fenced (not yet registered) broker is left out of it.
PY_PROBE='
import asyncio, sys
from aiokafka import AIOKafkaClient

async def main(bootstrap):
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(client.bootstrap(), 8)
        return len(client.cluster.brokers()) > 0
    finally:
        await client.close()

try:
    sys.exit(0 if asyncio.run(main(sys.argv[1])) else 1)
except Exception:
    sys.exit(1)
'

probe() {
    if [[ -z "${PROBE_PY+x}" ]]; then PROBE_PY="$(find_python || true)"; fi
    if [[ -n "$PROBE_PY" ]]; then
        timeout 15 "$PROBE_PY" -c "$PY_PROBE" "$BOOTSTRAP" >/dev/null 2>&1
    else
        # ApiVersions against every broker the metadata lists; it prints one block per broker.
        timeout 30 java -cp "$LIBS/*" -Dlog4j2.level=error \
            org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" 2>/dev/null \
            | grep -q "^$BOOTSTRAP (id: "
    fi
}

format_storage() {
    [[ -f "$LOGDIRS/meta.properties" ]] && return 0
    local cluster_id
    if [[ -f "$DATA/cluster.id" ]]; then
        cluster_id="$(cat "$DATA/cluster.id")"
    else
        # Kafka's Uuid text form: 16 random bytes, base64url without padding (22 chars).
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        echo "$cluster_id" >"$DATA/cluster.id"
    fi
    say "formatting KRaft storage in $LOGDIRS (cluster $cluster_id)"
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >"$DATA/format.log" 2>&1 \
        || { tail -n 30 "$DATA/format.log" >&2; die "storage format failed (log: $DATA/format.log)"; }
}

write_props() {
    sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@LOG_DIRS@|$LOGDIRS|g" \
        "$HERE/server.properties.in" >"$PROPS.tmp"
    mv "$PROPS.tmp" "$PROPS"
}

lock_data() {
    mkdir -p "$(dirname "$DATA")"
    # Beside the data dir, not in it: reset deletes the data dir while holding the lock.
    exec 9>"$DATA.lock"
    flock 9
}

do_start() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) on $BOOTSTRAP"
        return 0
    fi
    rm -f "$PIDFILE"
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
        port_open "$p" && die "port $p on 127.0.0.1 is in use by another process (not the broker of $DATA); set TAGSTREAM_KAFKA_PORT" 2
    done
    libs_complete || cmd_fetch
    command -v java >/dev/null || die "java not found; Kafka 4.0 needs Java 17+"

    mkdir -p "$DATA"
    [[ -f "$LOGFILE" ]] && mv -f "$LOGFILE" "$LOGFILE.1"
    : >"$LOGFILE"
    write_props
    format_storage

    local t0=$SECONDS
    say "starting Kafka on $BOOTSTRAP (controller :$CONTROLLER_PORT, data $DATA)"
    # setsid: the broker outlives this script and a Ctrl-C aimed at whoever called it.
    # The shell records its own pid, then becomes java, so the pid file names the JVM.
    # The lock fds are closed for it, or the broker would hold the lock for its whole life.
    # shellcheck disable=SC2086
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" </dev/null >>"$LOGFILE" 2>&1 8>&- 9>&- &

    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        pid="$(read_pid)"
        if [[ -n "$pid" ]] && ! is_broker_pid "$pid"; then
            echo "--- last lines of $LOGFILE ---" >&2
            tail -n 40 "$LOGFILE" >&2
            rm -f "$PIDFILE"
            die "broker exited during startup (log: $LOGFILE)"
        fi
        if [[ -n "$pid" ]] && port_open "$PORT" && probe; then
            say "ready (pid $pid) on $BOOTSTRAP after $((SECONDS - t0)) s"
            return 0
        fi
        sleep 0.5
    done
    echo "--- last lines of $LOGFILE ---" >&2
    tail -n 40 "$LOGFILE" >&2
    die "broker did not answer on $BOOTSTRAP within $START_TIMEOUT s; it is left running (pid $(read_pid)): see kafka.sh stop"
}

do_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    say "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while is_broker_pid "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if is_broker_pid "$pid"; then
        say "no clean exit after $STOP_TIMEOUT s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while is_broker_pid "$pid"; do sleep 0.1; done
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        say "stopped (data $DATA)"
        return 3
    fi
    if port_open "$PORT" && probe; then
        say "running (pid $pid) on $BOOTSTRAP, data $DATA"
        return 0
    fi
    say "process $pid is up but $BOOTSTRAP does not answer (log: $LOGFILE)"
    return 1
}

do_reset() {
    do_stop
    if [[ -d "$DATA" ]]; then
        # Refuse to wipe a directory this script did not create.
        [[ -f "$DATA/server.properties" || -d "$LOGDIRS" ]] \
            || die "$DATA does not look like a kafka.sh data directory; not deleting it"
        rm -rf "$DATA"
    fi
    say "data wiped ($DATA)"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) lock_data; do_start ;;
    stop) lock_data; do_stop ;;
    restart) lock_data; do_stop; do_start ;;
    status) cmd_status ;;
    reset) lock_data; do_reset ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 64 ;;
esac
