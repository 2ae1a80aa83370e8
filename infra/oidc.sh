#!/usr/bin/env bash
# Ensures a real OpenID Connect provider (npm oidc-provider@9, driven by infra/oidc/provider.mjs)
# answers on 127.0.0.1:PORT with issuer http://127.0.0.1:PORT. Several can run side by side on
# different ports (a second one is the "foreign issuer" of the SSO tests); each has its own signing
# key, pid file and log.
#
#   bash infra/oidc.sh [start] [--port N] [--config FILE]   # idempotent; default port 9400
#   bash infra/oidc.sh stop [--port N | --all]
#   bash infra/oidc.sh status [--port N]
#
# Port: --port, else $CUTTLE_OIDC_PORT, else 9400. Config (clients and accounts, see README.md):
# --config FILE, else $CUTTLE_OIDC_CONFIG, else inline JSON in $CUTTLE_OIDC_CONFIG_JSON, else
# infra/oidc/default-config.json. A provider this script started is restarted when its config,
# provider.mjs or the oidc-provider version changed; otherwise a running one is reused.
set -euo pipefail
INFRA_NAME=oidc
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
source "$here/lib-tools.sh"

OIDC_PROVIDER_MAJOR=9
HOST=127.0.0.1
command=start
port="${CUTTLE_OIDC_PORT:-9400}"
config="${CUTTLE_OIDC_CONFIG:-}"
all=""
while (($#)); do
    case "$1" in
    start | stop | status) command="$1" ;;
    --port) port="${2:?--port needs a value}"; shift ;;
    --port=*) port="${1#--port=}" ;;
    --config) config="${2:?--config needs a value}"; shift ;;
    --config=*) config="${1#--config=}" ;;
    --all) all=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "bad port '$port'"
fi

ISSUER="http://$HOST:$port"
PID_FILE="$CUTTLE_CACHE_DIR/oidc-$port.pid"
LOG_FILE="$CUTTLE_CACHE_DIR/oidc-$port.log"
STATE_DIR="$CUTTLE_CACHE_DIR/oidc-$port"

# Succeeds when $ISSUER serves an OpenID discovery document naming itself as the issuer.
discovery_answers() {
    local document
    if command -v curl >/dev/null 2>&1; then
        # Read the whole answer first: `curl | grep -q` fails under pipefail whenever grep exits
        # before curl has written everything (curl then dies of SIGPIPE).
        document=$(curl -fsS --max-time 3 "$ISSUER/.well-known/openid-configuration" 2>/dev/null) || return 1
        [[ "$document" == *"\"issuer\":\"$ISSUER\""* ]]
    else
        port_open "$HOST" "$port"
    fi
}

case "$command" in
stop)
    if [[ -n "$all" ]]; then
        shopt -s nullglob
        for pid_file in "$CUTTLE_CACHE_DIR"/oidc-*.pid; do
            stop_pid_file "$pid_file"
        done
        echo "oidc: stopped every provider started by this script"
    else
        stop_pid_file "$PID_FILE"
        echo "oidc: stopped $ISSUER"
    fi
    exit 0
    ;;
status)
    if pid=$(live_pid "$PID_FILE"); then
        echo "oidc: running $ISSUER (pid $pid, log $LOG_FILE)"
    elif discovery_answers; then
        echo "oidc: running $ISSUER (not started by this script)"
    else
        echo "oidc: not running on $ISSUER"
        exit 1
    fi
    exit 0
    ;;
esac

# One start at a time per port (parallel test binaries may all call this script); the server
# must not inherit the lock's file descriptor, or it would hold the lock for as long as it runs.
exec 8>"$CUTTLE_CACHE_DIR/oidc-$port.lock"
flock -w 120 8 || die "another oidc.sh start on port $port holds $CUTTLE_CACHE_DIR/oidc-$port.lock"

ensure_node_tool oidc-provider "$OIDC_PROVIDER_MAJOR"
mkdir -p "$STATE_DIR"
if [[ -z "$config" && -n "${CUTTLE_OIDC_CONFIG_JSON:-}" ]]; then
    config="$STATE_DIR/config-from-env.json"
    printf '%s\n' "$CUTTLE_OIDC_CONFIG_JSON" >"$config"
fi
config="${config:-$here/oidc/default-config.json}"
[[ -f "$config" ]] || die "config file $config does not exist"
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"

# What the running provider was started from; a change means a restart.
fingerprint=$(cat "$here/oidc/provider.mjs" "$config" \
    "$CUTTLE_NODE_TOOLS/node_modules/oidc-provider/package.json" | sha256sum | cut -c1-16)

if pid=$(live_pid "$PID_FILE"); then
    if [[ "$(cat "$STATE_DIR/fingerprint" 2>/dev/null)" == "$fingerprint" ]] && discovery_answers; then
        echo "oidc: reused $ISSUER"
        exit 0
    fi
    say "provider (pid $pid) runs an older config or provider.mjs, or does not answer; restarting it"
    stop_pid_file "$PID_FILE"
elif port_open "$HOST" "$port"; then
    if discovery_answers; then
        say "an OIDC provider not started by this script serves $ISSUER; reusing it as is"
        echo "oidc: reused $ISSUER"
        exit 0
    fi
    die "127.0.0.1:$port is taken by something that is not an OIDC provider with issuer $ISSUER"
fi

port_closed() { ! port_open "$HOST" "$port"; }
WAIT_SECONDS=10 wait_until port_closed || die "127.0.0.1:$port is still busy after stopping the old provider"

# Run from the state directory, never from a checkout that may be deleted while it runs.
cd "$STATE_DIR"
say "starting oidc-provider on $ISSUER with $config (log: $LOG_FILE)"
# setsid detaches it from this shell's session so that it outlives the script (see s3.sh).
nohup setsid node "$here/oidc/provider.mjs" --host "$HOST" --port "$port" --config "$config" \
    --state-dir "$STATE_DIR" >>"$LOG_FILE" 2>&1 </dev/null 8>&- &
server_pid=$!
echo "$server_pid" >"$PID_FILE"
echo "$fingerprint" >"$STATE_DIR/fingerprint"

server_ready() {
    kill -0 "$server_pid" 2>/dev/null || die "the provider exited during start-up; last log lines:
$(tail -n 20 "$LOG_FILE")"
    discovery_answers
}
WAIT_SECONDS=30 wait_until server_ready || die "the provider did not answer on $ISSUER within 30 s; last lines of $LOG_FILE:
$(tail -n 20 "$LOG_FILE")"
echo "oidc: started $ISSUER"
