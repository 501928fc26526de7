#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM), jars from Maven Central.
# Usage: kafka.sh fetch|start|stop|restart|status|reset   (see `kafka.sh help` for the environment)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG=kafka.sh
# shellcheck source=SCRIPTDIR/../lib/process.sh
source "$HERE/../lib/process.sh"
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
SASL_PORT="${TAGSTREAM_KAFKA_SASL_PORT:-}"
SCRAM_USERS="${TAGSTREAM_KAFKA_SCRAM_USERS:-}"

PIDFILE="$DATA/kafka.pid"
LOGFILE="$DATA/kafka.log"
PROPS="$DATA/server.properties"
LOGDIRS="$DATA/kraft"
# The broker JVM's command line has this: kafka.Kafka is its main class.
PATTERN='kafka\.Kafka '
# Which SCRAM users (and passwords, as salted hashes) the storage was formatted with.
USERSFILE="$DATA/scram-users"
BOOTSTRAP="127.0.0.1:$PORT"

usage() {
    cat <<EOF
usage: kafka.sh {fetch|start|stop|kill|restart|status|reset}
  fetch    resolve the broker jars into libs/ with Maven (skipped when libs/ matches pom.xml)
  start    fetch if needed, format storage once, start in the background, wait until it answers
  stop     SIGTERM, wait up to \$TAGSTREAM_KAFKA_STOP_TIMEOUT s ($STOP_TIMEOUT), then SIGKILL
  kill     SIGKILL the broker, as a crash would (fault tests); start brings it back on the same data
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
  TAGSTREAM_KAFKA_SASL_PORT        also listen on this port with SASL_PLAINTEXT, SCRAM-SHA-512 (off);
                                   brokers and the controller keep talking over PLAINTEXT
  TAGSTREAM_KAFKA_SCRAM_USERS      SCRAM-SHA-512 users as name:password[,name:password...], with no
                                   ',' or '"' in them (none); created when the storage is formatted,
                                   so they need a fresh data dir: start exits 4 when the storage
                                   lacks one (kafka.sh reset)
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

# --- probe --------------------------------------------------------------------------------------

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

# SCRAM_NAMES[i] and SCRAM_PASSWORDS[i] from $SCRAM_USERS. Messages never show an entry: it holds a password.
parse_scram_users() {
    SCRAM_NAMES=()
    SCRAM_PASSWORDS=()
    [[ -n "$SCRAM_USERS" ]] || return 0
    local entry name password
    local -a entries
    IFS=',' read -ra entries <<<"$SCRAM_USERS"
    for entry in "${entries[@]}"; do
        name="${entry%%:*}"
        password="${entry#*:}"
        [[ "$entry" == *:* && -n "$name" && -n "$password" ]] \
            || die "TAGSTREAM_KAFKA_SCRAM_USERS: expected name:password[,name:password...]" 64
        # StorageTool's --add-scram parser strips a pair of quotes around a value.
        [[ "$name$password" != *'"'* ]] || die "TAGSTREAM_KAFKA_SCRAM_USERS: names and passwords cannot contain '\"'" 64
        SCRAM_NAMES+=("$name")
        SCRAM_PASSWORDS+=("$password")
    done
}

# Salted with the cluster id, so the file says whether a password matches without holding it.
scram_fingerprint() { printf '%s\n%s\n%s' "$1" "$2" "$3" | sha256sum | cut -d' ' -f1; }

# SCRAM users exist only if the format created them: storage formatted without them (or with
# other passwords) would leave every client failing to authenticate, so say so instead.
scram_users_present() {
    ((${#SCRAM_NAMES[@]})) || return 0
    [[ -f "$LOGDIRS/meta.properties" ]] || return 0
    local cluster_id i
    cluster_id="$(cat "$DATA/cluster.id" 2>/dev/null)" || return 1
    for i in "${!SCRAM_NAMES[@]}"; do
        grep -qxF "$(scram_fingerprint "$cluster_id" "${SCRAM_NAMES[i]}" "${SCRAM_PASSWORDS[i]}") ${SCRAM_NAMES[i]}" \
            "$USERSFILE" 2>/dev/null || return 1
    done
}

check_sasl_env() {
    [[ -z "$SASL_PORT" || "$SASL_PORT" =~ ^[0-9]+$ ]] \
        || die "TAGSTREAM_KAFKA_SASL_PORT: expected a port number, got '$SASL_PORT'" 64
    parse_scram_users
    scram_users_present \
        || die "storage in $DATA lacks a TAGSTREAM_KAFKA_SCRAM_USERS user (or has another password); see kafka.sh reset" 4
}

format_storage() {
    [[ -f "$LOGDIRS/meta.properties" ]] && return 0
    local cluster_id
    if [[ -f "$DATA/cluster.id" ]]; then
        cluster_id="$(cat "$DATA/cluster.id")"
    else
        # Kafka's Uuid text form: 16 random bytes, base64url without padding (22 chars). Like
        # Kafka's own Uuid.randomUuid, never one starting with '-': a tool would read it as an option.
        cluster_id="-"
        while [[ "$cluster_id" == -* ]]; do
            cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        done
        echo "$cluster_id" >"$DATA/cluster.id"
    fi
    # The tool's arguments go in a java @argfile readable by us alone: passwords on the command
    # line would show in every process listing. In it, quotes group and a backslash escapes.
    local args="$DATA/format.args" i arg
    (
        umask 077
        {
            printf '%s\n' kafka.tools.StorageTool format "--cluster-id=$cluster_id" -c "\"${PROPS//\\/\\\\}\""
            for i in "${!SCRAM_NAMES[@]}"; do
                arg="SCRAM-SHA-512=[name=${SCRAM_NAMES[i]},password=${SCRAM_PASSWORDS[i]}]"
                printf -- '--add-scram\n"%s"\n' "${arg//\\/\\\\}"
            done
        } >"$args"
    )
    say "formatting KRaft storage in $LOGDIRS (cluster $cluster_id${SCRAM_NAMES[*]:+, SCRAM users ${SCRAM_NAMES[*]}})"
    local rc=0
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/log4j2.properties" "@$args" >"$DATA/format.log" 2>&1 || rc=$?
    rm -f "$args"
    ((rc == 0)) || { tail -n 30 "$DATA/format.log" >&2; die "storage format failed (log: $DATA/format.log)"; }
    ((${#SCRAM_NAMES[@]})) || return 0
    for i in "${!SCRAM_NAMES[@]}"; do
        echo "$(scram_fingerprint "$cluster_id" "${SCRAM_NAMES[i]}" "${SCRAM_PASSWORDS[i]}") ${SCRAM_NAMES[i]}"
    done >"$USERSFILE"
}

write_props() {
    local sasl_listener="" sasl_map=""
    if [[ -n "$SASL_PORT" ]]; then
        sasl_listener=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        sasl_map=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@LOG_DIRS@|$LOGDIRS|g" \
        -e "s|@SASL_LISTENER@|$sasl_listener|g" -e "s|@SASL_MAP@|$sasl_map|g" \
        "$HERE/server.properties.in" >"$PROPS.tmp"
    if [[ -n "$SASL_PORT" ]]; then
        # Listener-scoped, so only SASL_PLAINTEXT asks for credentials. The login module needs no
        # options on a broker: SCRAM credentials live in the cluster metadata (--add-scram at format).
        cat >>"$PROPS.tmp" <<'EOF'

# TAGSTREAM_KAFKA_SASL_PORT: clients on the SASL_PLAINTEXT listener authenticate with SCRAM-SHA-512.
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    fi
    mv "$PROPS.tmp" "$PROPS"
}

answering() { port_open "$PORT" && probe; }

# Startup also waits for the SASL port, when asked for: that listener opens with PLAINTEXT (what the
# probe speaks), but only an open port says so.
ready() { answering && { [[ -z "$SASL_PORT" ]] || port_open "$SASL_PORT"; }; }

do_start() {
    check_sasl_env
    local pid
    pid="$(running_pid "$PIDFILE" "$PATTERN")"
    if [[ -n "$pid" ]]; then
        if [[ -n "$SASL_PORT" ]] && ! grep -q "^listeners=.*,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT\$" "$PROPS"; then
            die "already running (pid $pid) on $BOOTSTRAP without a SASL listener on :$SASL_PORT; see kafka.sh restart" 4
        fi
        say "already running (pid $pid) on $BOOTSTRAP${SASL_PORT:+ (SASL :$SASL_PORT)}"
        return 0
    fi
    rm -f "$PIDFILE"
    local p
    for p in "$PORT" "$CONTROLLER_PORT" ${SASL_PORT:+"$SASL_PORT"}; do
        port_open "$p" && die "port $p on 127.0.0.1 is in use by another process (not the broker of $DATA); set TAGSTREAM_KAFKA_PORT" 2
    done
    libs_complete || cmd_fetch
    command -v java >/dev/null || die "java not found; Kafka 4.0 needs Java 17+"

    mkdir -p "$DATA"
    rotate_log "$LOGFILE"
    write_props
    format_storage

    say "starting Kafka on $BOOTSTRAP (${SASL_PORT:+SASL :$SASL_PORT, }controller :$CONTROLLER_PORT, data $DATA)"
    # The pid file names the JVM itself (see launch).
    # shellcheck disable=SC2086
    launch "$PIDFILE" "$LOGFILE" \
        java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS"
    wait_started "$PIDFILE" "$PATTERN" "$LOGFILE" "$START_TIMEOUT" 0.5 broker "$BOOTSTRAP" ready
}

do_stop() { stop_server "$PIDFILE" "$PATTERN" "$STOP_TIMEOUT"; }

do_kill() {
    local pid
    pid="$(running_pid "$PIDFILE" "$PATTERN")"
    if [[ -z "$pid" ]]; then
        say "not running"
        return 0
    fi
    say "killing (pid $pid) with SIGKILL"
    signal_server KILL "$pid"
    wait_gone "$pid" "$PATTERN"
    rm -f "$PIDFILE"
    say "killed"
}

cmd_status() { server_status "$PIDFILE" "$PATTERN" "$LOGFILE" "$DATA" "$BOOTSTRAP" "does not answer" answering; }

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
    start) lock_data "$DATA"; do_start ;;
    stop) lock_data "$DATA"; do_stop ;;
    kill) lock_data "$DATA"; do_kill ;;
    restart) lock_data "$DATA"; do_stop; do_start ;;
    status) cmd_status ;;
    reset) lock_data "$DATA"; do_reset ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 64 ;;
esac
