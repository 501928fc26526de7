#!/usr/bin/env bash
# Local Label Studio (PyPI label-studio, Django + sqlite) in its own virtualenv, for `tagstream review`.
# Usage: labelstudio.sh install|start|stop|status   (see `labelstudio.sh help` for the environment)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Its own venv: label-studio pins Django, pydantic, numpy... versions that clash with tagstream's.
VENV="${LABEL_STUDIO_VENV:-$HERE/.venv}"
VERSION_SPEC="${LABEL_STUDIO_VERSION_SPEC:-label-studio==1.23.*}"
PYTHON="${LABEL_STUDIO_PYTHON:-python3}"
PORT="${LABEL_STUDIO_PORT:-8089}"
DATA="${LABEL_STUDIO_BASE_DATA_DIR:-$HERE/data}"
DATA="${DATA%/}"
# Defaults for local tests only; anything shared sets its own.
USERNAME="${LABEL_STUDIO_USERNAME:-tagstream@localhost}"
PASSWORD="${LABEL_STUDIO_PASSWORD:-tagstream-local}"
TOKEN="${LABEL_STUDIO_USER_TOKEN:-tagstream-local-token-0123456789abcdef}"
START_TIMEOUT="${LABEL_STUDIO_START_TIMEOUT:-300}"
STOP_TIMEOUT="${LABEL_STUDIO_STOP_TIMEOUT:-30}"

STAMP="$VENV/.tagstream-install"
PIDFILE="$DATA/labelstudio.pid"
LOGFILE="$DATA/labelstudio.log"
URL="http://127.0.0.1:$PORT"

say() { echo "labelstudio.sh: $*"; }
die() { echo "labelstudio.sh: $1" >&2; exit "${2:-1}"; }

usage() {
    cat <<EOF
usage: labelstudio.sh {install|start|stop|status}
  install  make the virtualenv and pip install '$VERSION_SPEC' (skipped when its stamp matches)
  start    install if needed, start on $URL in the background, wait until the API takes the token
  stop     SIGTERM, wait up to \$LABEL_STUDIO_STOP_TIMEOUT s ($STOP_TIMEOUT), then SIGKILL
  status   exit 0 when running and answering, 3 when stopped, 1 when not answering
environment:
  LABEL_STUDIO_PORT           port on 127.0.0.1 (8089)
  LABEL_STUDIO_BASE_DATA_DIR  data dir: sqlite DB, media, labelstudio.log, labelstudio.pid
                              (deploy/labelstudio/data)
  LABEL_STUDIO_USERNAME       user made at start ($USERNAME)
  LABEL_STUDIO_PASSWORD       its password (a local default)
  LABEL_STUDIO_USER_TOKEN     its API token, sent as 'Authorization: Token ...' (a local default)
  LABEL_STUDIO_START_TIMEOUT  seconds to wait for the API ($START_TIMEOUT; the first start migrates the DB)
  LABEL_STUDIO_VENV           the virtualenv (deploy/labelstudio/.venv)
  LABEL_STUDIO_PYTHON         interpreter the virtualenv is made from (python3)
EOF
}

# --- install ------------------------------------------------------------------------------------

install_stamp() { echo "$VERSION_SPEC $("$PYTHON" -V 2>&1)"; }

installed() { [[ -x "$VENV/bin/label-studio" && "$(cat "$STAMP" 2>/dev/null)" == "$(install_stamp)" ]]; }

cmd_install() {
    mkdir -p "$(dirname "$VENV")"
    exec 8>"$VENV.lock"
    flock 8
    if installed; then
        say "$VERSION_SPEC is installed in $VENV"
        return 0
    fi
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set LABEL_STUDIO_PYTHON)"
    local t0=$SECONDS log="$VENV.install.log"
    say "pip install '$VERSION_SPEC' into $VENV (a few hundred MB, a minute or two)"
    rm -f "$STAMP"
    { [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"; } >"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; die "could not create the virtualenv $VENV (log: $log)"; }
    { "$VENV/bin/python" -m pip install --quiet --upgrade pip \
        && "$VENV/bin/python" -m pip install --quiet "$VERSION_SPEC"; } >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; die "pip install '$VERSION_SPEC' failed (log: $log)"; }
    install_stamp >"$STAMP"
    say "installed label-studio $("$VENV/bin/python" -m pip show label-studio 2>/dev/null | sed -n 's/^Version: //p') in $((SECONDS - t0)) s"
}

# --- process ------------------------------------------------------------------------------------

read_pid() { [[ -f "$PIDFILE" ]] && cat "$PIDFILE" 2>/dev/null || true; }

# Alive and still our server: a reused pid, or an unreaped zombie (empty cmdline), is not.
is_server_pid() {
    local pid="$1"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'label-studio'
}

running_pid() {
    local pid
    pid="$(read_pid)"
    if is_server_pid "$pid"; then echo "$pid"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The API takes our token: migrations are done, the user exists and legacy tokens are on.
PY_PROBE='
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Token " + sys.argv[2]})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
'

probe() { "$VENV/bin/python" -c "$PY_PROBE" "$URL/api/projects?page_size=1" "$TOKEN" >/dev/null 2>&1; }

lock_data() {
    mkdir -p "$(dirname "$DATA")"
    # Beside the data dir, not in it, like kafka.sh.
    exec 9>"$DATA.lock"
    flock 9
}

log_tail() {
    echo "--- last lines of $LOGFILE ---" >&2
    tail -n 40 "$LOGFILE" >&2 || true
}

do_start() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) on $URL"
        return 0
    fi
    rm -f "$PIDFILE"
    port_open "$PORT" && die "port $PORT on 127.0.0.1 is in use by another process (not the server of $DATA); set LABEL_STUDIO_PORT" 2
    installed || cmd_install

    mkdir -p "$DATA"
    [[ -f "$LOGFILE" ]] && mv -f "$LOGFILE" "$LOGFILE.1"
    : >"$LOGFILE"
    local t0=$SECONDS
    say "starting Label Studio on $URL (data $DATA)"
    # setsid: the server outlives this script and a Ctrl-C aimed at whoever called it. The shell
    # records its own pid, then becomes label-studio, so the pid file names the server. User,
    # password and token go in its environment: a command line shows in every process listing.
    # The lock fds are closed for it, or the server would hold the locks for its whole life.
    LABEL_STUDIO_BASE_DATA_DIR="$DATA" LABEL_STUDIO_PORT="$PORT" \
    LABEL_STUDIO_USERNAME="$USERNAME" LABEL_STUDIO_PASSWORD="$PASSWORD" LABEL_STUDIO_USER_TOKEN="$TOKEN" \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true COLLECT_ANALYTICS=false SENTRY_DSN='' FRONTEND_SENTRY_DSN='' \
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        "$VENV/bin/label-studio" start --internal-host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --no-browser \
        </dev/null >>"$LOGFILE" 2>&1 8>&- 9>&- &

    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        pid="$(read_pid)"
        if [[ -n "$pid" ]] && ! is_server_pid "$pid"; then
            log_tail
            rm -f "$PIDFILE"
            die "Label Studio exited during startup (log: $LOGFILE)"
        fi
        if [[ -n "$pid" ]] && port_open "$PORT" && probe; then
            say "ready (pid $pid) on $URL after $((SECONDS - t0)) s"
            return 0
        fi
        sleep 1
    done
    log_tail
    die "Label Studio did not answer on $URL within $START_TIMEOUT s; it is left running (pid $(read_pid)): see labelstudio.sh stop"
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
    # setsid made it a process group leader: whatever it spawned goes with it.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while is_server_pid "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if is_server_pid "$pid"; then
        say "no clean exit after $STOP_TIMEOUT s; sending SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        while is_server_pid "$pid"; do sleep 0.1; done
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
        say "running (pid $pid) on $URL, data $DATA"
        return 0
    fi
    say "process $pid is up but $URL does not take the token (log: $LOGFILE)"
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    start) lock_data; do_start ;;
    stop) lock_data; do_stop ;;
    status) cmd_status ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 64 ;;
esac
