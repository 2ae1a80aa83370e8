#!/usr/bin/env bash
# Ensures a real SMTP server (PyPI aiosmtpd, driven by infra/smtp/server.py) answers on
# 127.0.0.1:PORT and writes every message it receives as one .eml file into a directory that
# tests read. aiosmtpd lives in a venv under $HOME/.cache/cuttle/py-tools, never in system pip.
#
#   bash infra/smtp.sh [start] [--port N] [--dir DIR]   # idempotent; default port 2525
#   bash infra/smtp.sh stop [--port N]
#   bash infra/smtp.sh status [--port N]
#   bash infra/smtp.sh clear [--port N]                  # delete the received .eml files
#
# Port: --port, else $CUTTLE_SMTP_PORT, else 2525. Mail directory: --dir, else $CUTTLE_SMTP_DIR,
# else $HOME/.cache/cuttle/smtp-mail/<port>. With $CUTTLE_SMTP_USER and $CUTTLE_SMTP_PASSWORD set,
# clients must AUTH with that pair. A server this script started is restarted when its settings or
# server.py changed; otherwise a running one is reused.
set -euo pipefail
INFRA_NAME=smtp
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
source "$here/lib-tools.sh"

AIOSMTPD_VERSION=1.4.6
HOST=127.0.0.1
VENV="${CUTTLE_PY_TOOLS:-$CUTTLE_CACHE_DIR/py-tools}"
command=start
port="${CUTTLE_SMTP_PORT:-2525}"
mail_dir="${CUTTLE_SMTP_DIR:-}"
while (($#)); do
    case "$1" in
    start | stop | status | clear) command="$1" ;;
    --port) port="${2:?--port needs a value}"; shift ;;
    --port=*) port="${1#--port=}" ;;
    --dir) mail_dir="${2:?--dir needs a value}"; shift ;;
    --dir=*) mail_dir="${1#--dir=}" ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "bad port '$port'"
fi
mail_dir="${mail_dir:-$CUTTLE_CACHE_DIR/smtp-mail/$port}"
mkdir -p "$mail_dir"
mail_dir="$(cd "$mail_dir" && pwd)"
ENDPOINT="$HOST:$port"
PID_FILE="$CUTTLE_CACHE_DIR/smtp-$port.pid"
LOG_FILE="$CUTTLE_CACHE_DIR/smtp-$port.log"
FINGERPRINT_FILE="$CUTTLE_CACHE_DIR/smtp-$port.fingerprint"

# Succeeds when an SMTP server greets with 220 on the port (bash /dev/tcp, no client needed).
smtp_answers() (
    greeting=""
    exec 3<>"/dev/tcp/$HOST/$port" || exit 1
    read -r -t 3 greeting <&3 || true
    printf 'QUIT\r\n' >&3 || true
    [[ "$greeting" == 220* ]]
) 2>/dev/null

case "$command" in
stop)
    stop_pid_file "$PID_FILE"
    echo "smtp: stopped $ENDPOINT"
    exit 0
    ;;
status)
    if pid=$(live_pid "$PID_FILE"); then
        echo "smtp: running $ENDPOINT (pid $pid), mail in $mail_dir, log $LOG_FILE"
    elif smtp_answers; then
        echo "smtp: running $ENDPOINT (not started by this script)"
    else
        echo "smtp: not running on $ENDPOINT"
        exit 1
    fi
    exit 0
    ;;
clear)
    find "$mail_dir" -maxdepth 1 -type f -name '*.eml' -delete
    echo "smtp: cleared $mail_dir"
    exit 0
    ;;
esac

# One start at a time per port (parallel test binaries may all call this script); the server
# must not inherit the lock's file descriptor, or it would hold the lock for as long as it runs.
exec 8>"$CUTTLE_CACHE_DIR/smtp-$port.lock"
flock -w 120 8 || die "another smtp.sh start on port $port holds $CUTTLE_CACHE_DIR/smtp-$port.lock"

# The venv and aiosmtpd: a directory check when present, so a no-op run starts no Python.
installed() {
    compgen -G "$VENV/lib/python3*/site-packages/aiosmtpd-$AIOSMTPD_VERSION.dist-info" >/dev/null
}
if ! installed; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        command -v python3 >/dev/null 2>&1 || apt_ensure python3
        say "creating a Python venv in $VENV"
        if ! python3 -m venv "$VENV" >&2; then
            # Debian's python3 ships venv's ensurepip separately.
            rm -rf "$VENV"
            apt_ensure python3-venv
            python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
        fi
    fi
    say "installing aiosmtpd==$AIOSMTPD_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "aiosmtpd==$AIOSMTPD_VERSION" >&2
    installed || die "aiosmtpd $AIOSMTPD_VERSION is still missing from $VENV"
fi

auth_args=()
if [[ -n "${CUTTLE_SMTP_USER:-}" || -n "${CUTTLE_SMTP_PASSWORD:-}" ]]; then
    auth_args=(--user "${CUTTLE_SMTP_USER:-}" --password "${CUTTLE_SMTP_PASSWORD:-}")
fi
fingerprint=$( {
    cat "$here/smtp/server.py"
    echo "$mail_dir ${auth_args[*]:-} $AIOSMTPD_VERSION"
} | sha256sum | cut -c1-16)

if pid=$(live_pid "$PID_FILE"); then
    if [[ "$(cat "$FINGERPRINT_FILE" 2>/dev/null)" == "$fingerprint" ]] && smtp_answers; then
        echo "smtp: reused $ENDPOINT (mail in $mail_dir)"
        exit 0
    fi
    say "server (pid $pid) runs older settings or server.py, or does not answer; restarting it"
    stop_pid_file "$PID_FILE"
elif port_open "$HOST" "$port"; then
    if smtp_answers; then
        say "an SMTP server not started by this script listens on $ENDPOINT; reusing it (mail may not reach $mail_dir)"
        echo "smtp: reused $ENDPOINT"
        exit 0
    fi
    die "$ENDPOINT is taken by something that does not greet like an SMTP server"
fi

port_closed() { ! port_open "$HOST" "$port"; }
WAIT_SECONDS=10 wait_until port_closed || die "$ENDPOINT is still busy after stopping the old server"

# Run from the mail directory, never from a checkout that may be deleted while it runs.
cd "$mail_dir"
say "starting aiosmtpd on $ENDPOINT writing to $mail_dir (log: $LOG_FILE)"
nohup setsid "$VENV/bin/python" -u "$here/smtp/server.py" --host "$HOST" --port "$port" \
    --dir "$mail_dir" "${auth_args[@]}" >>"$LOG_FILE" 2>&1 </dev/null 8>&- &
server_pid=$!
echo "$server_pid" >"$PID_FILE"
echo "$fingerprint" >"$FINGERPRINT_FILE"

server_ready() {
    kill -0 "$server_pid" 2>/dev/null || die "the SMTP server exited during start-up; last log lines:
$(tail -n 20 "$LOG_FILE")"
    smtp_answers
}
WAIT_SECONDS=30 wait_until server_ready || die "the SMTP server did not answer on $ENDPOINT within 30 s; last lines of $LOG_FILE:
$(tail -n 20 "$LOG_FILE")"
echo "smtp: started $ENDPOINT (mail in $mail_dir)"
