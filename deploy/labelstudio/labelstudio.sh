#!/usr/bin/env bash
# Local Label Studio (PyPI label-studio, Django + sqlite) in its own virtualenv, for `tagstream review`.
# Usage: labelstudio.sh install|start|stop|status   (see `labelstudio.sh help` for the environment)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG=labelstudio.sh
# shellcheck source=SCRIPTDIR/../lib/process.sh
source "$HERE/../lib/process.sh"

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
# The server's command line has this (it runs $VENV/bin/label-studio).
PATTERN='label-studio'
URL="http://127.0.0.1:$PORT"

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

answering() { port_open "$PORT" && probe; }

do_start() {
    local pid
    pid="$(running_pid "$PIDFILE" "$PATTERN")"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) on $URL"
        return 0
    fi
    rm -f "$PIDFILE"
    port_open "$PORT" && die "port $PORT on 127.0.0.1 is in use by another process (not the server of $DATA); set LABEL_STUDIO_PORT" 2
    installed || cmd_install

    mkdir -p "$DATA"
    rotate_log "$LOGFILE"
    say "starting Label Studio on $URL (data $DATA)"
    # User, password and token go in its environment: a command line shows in every process listing.
    LABEL_STUDIO_BASE_DATA_DIR="$DATA" LABEL_STUDIO_PORT="$PORT" \
    LABEL_STUDIO_USERNAME="$USERNAME" LABEL_STUDIO_PASSWORD="$PASSWORD" LABEL_STUDIO_USER_TOKEN="$TOKEN" \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true COLLECT_ANALYTICS=false SENTRY_DSN='' FRONTEND_SENTRY_DSN='' \
    launch "$PIDFILE" "$LOGFILE" \
        "$VENV/bin/label-studio" start --internal-host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --no-browser
    wait_started "$PIDFILE" "$PATTERN" "$LOGFILE" "$START_TIMEOUT" 1 "Label Studio" "$URL" answering
}

# Signals go to its process group: whatever the server spawned goes with it.
do_stop() { stop_server "$PIDFILE" "$PATTERN" "$STOP_TIMEOUT" group; }

cmd_status() { server_status "$PIDFILE" "$PATTERN" "$LOGFILE" "$DATA" "$URL" "does not take the token" answering; }

case "${1:-}" in
    install) cmd_install ;;
    start) lock_data "$DATA"; do_start ;;
    stop) lock_data "$DATA"; do_stop ;;
    status) cmd_status ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 64 ;;
esac
