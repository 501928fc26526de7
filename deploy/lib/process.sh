# Process helpers for the local servers of deploy/ (kafka/kafka.sh, labelstudio/labelstudio.sh): one
# server started in the background under setsid, known by its pid file and a pattern in its command line.
# Sourced, not run. The sourcing script sets PROG (its own name, which starts every message) first.
# shellcheck shell=bash

say() { echo "$PROG: $*"; }
die() { echo "$PROG: $1" >&2; exit "${2:-1}"; }

# read_pid PIDFILE: the pid it holds, or nothing.
read_pid() { [[ -f "$1" ]] && cat "$1" 2>/dev/null || true; }

# is_server_pid PID PATTERN: alive and still our server, its command line matching PATTERN (grep).
# A reused pid, or an unreaped zombie (empty cmdline), is not. 2>/dev/null comes first so that it also
# silences the < of a process gone since the -r test.
is_server_pid() {
    local pid="$1" pattern="$2"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "$pattern"
}

# running_pid PIDFILE PATTERN: prints the pid in PIDFILE when it is our server's, else nothing.
running_pid() {
    local pid
    pid="$(read_pid "$1")"
    if is_server_pid "$pid" "$2"; then echo "$pid"; fi
}

# port_open PORT: something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# lock_data DATA: hold DATA.lock (fd 9) until this script exits. Beside the data dir, not in it:
# kafka.sh reset deletes the data dir while holding the lock.
lock_data() {
    mkdir -p "$(dirname "$1")"
    exec 9>"$1.lock"
    flock 9
}

# rotate_log LOGFILE: keep the last run's log as LOGFILE.1 and start an empty one.
rotate_log() {
    if [[ -f "$1" ]]; then mv -f "$1" "$1.1"; fi
    : >"$1"
}

log_tail() {
    echo "--- last lines of $1 ---" >&2
    tail -n 40 "$1" >&2 || true
}

# launch PIDFILE LOGFILE COMMAND...: start COMMAND in the background, output appended to LOGFILE.
# setsid: it outlives this script and a Ctrl-C aimed at whoever called it. The shell records its own
# pid, then becomes COMMAND, so the pid file names the server. The lock fds (8, 9) are closed for
# it, or the server would hold the locks for its whole life.
launch() {
    local pidfile="$1" logfile="$2"
    shift 2
    # shellcheck disable=SC2016  # $$ and $0 are the inner shell's
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 8>&- 9>&- &
}

# wait_started PIDFILE PATTERN LOGFILE TIMEOUT INTERVAL WHAT WHERE READY...: every INTERVAL s, until
# the command READY... succeeds. Dies, with the log's last lines, when the server (WHAT, on WHERE)
# exits first or has not answered after TIMEOUT s; the latter leaves it running.
wait_started() {
    local pidfile="$1" pattern="$2" logfile="$3" timeout="$4" interval="$5" what="$6" where="$7"
    shift 7
    local pid t0=$SECONDS deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        pid="$(read_pid "$pidfile")"
        if [[ -n "$pid" ]] && ! is_server_pid "$pid" "$pattern"; then
            log_tail "$logfile"
            rm -f "$pidfile"
            die "$what exited during startup (log: $logfile)"
        fi
        if [[ -n "$pid" ]] && "$@"; then
            say "ready (pid $pid) on $where after $((SECONDS - t0)) s"
            return 0
        fi
        sleep "$interval"
    done
    log_tail "$logfile"
    die "$what did not answer on $where within $timeout s; it is left running (pid $(read_pid "$pidfile")): see $PROG stop"
}

# server_status PIDFILE PATTERN LOGFILE DATA WHERE FAILURE READY...: says how the server is and returns
# 0 when it runs and the command READY... succeeds, 3 when stopped, 1 when it runs but FAILURE (e.g.
# "does not answer").
server_status() {
    local pidfile="$1" pattern="$2" logfile="$3" data="$4" where="$5" failure="$6" pid
    shift 6
    pid="$(running_pid "$pidfile" "$pattern")"
    if [[ -z "$pid" ]]; then
        say "stopped (data $data)"
        return 3
    fi
    if "$@"; then
        say "running (pid $pid) on $where, data $data"
        return 0
    fi
    say "process $pid is up but $where $failure (log: $logfile)"
    return 1
}

# signal_server SIGNAL PID [group]: with "group", the whole process group first (setsid made the
# server its leader, so whatever it spawned goes with it), else (or if that fails) the pid alone.
signal_server() {
    if [[ -n "${3:-}" ]] && kill -"$1" -- "-$2" 2>/dev/null; then return 0; fi
    kill -"$1" "$2" 2>/dev/null || true
}

# wait_gone PID PATTERN: until the process is no longer our server.
wait_gone() { while is_server_pid "$1" "$2"; do sleep 0.1; done; }

# stop_server PIDFILE PATTERN TIMEOUT [group]: SIGTERM, wait up to TIMEOUT s, then SIGKILL; removes
# the pid file. "group" signals the process group, as signal_server does.
stop_server() {
    local pidfile="$1" pattern="$2" timeout="$3" group="${4:-}" pid
    pid="$(running_pid "$pidfile" "$pattern")"
    if [[ -z "$pid" ]]; then
        rm -f "$pidfile"
        say "not running"
        return 0
    fi
    say "stopping (pid $pid)"
    signal_server TERM "$pid" "$group"
    local deadline=$((SECONDS + timeout))
    while is_server_pid "$pid" "$pattern" && ((SECONDS < deadline)); do sleep 0.2; done
    if is_server_pid "$pid" "$pattern"; then
        say "no clean exit after $timeout s; sending SIGKILL"
        signal_server KILL "$pid" "$group"
        wait_gone "$pid" "$pattern"
    fi
    rm -f "$pidfile"
    say "stopped"
}
