#!/usr/bin/env bash
# Ensures an S3-compatible server answers on 127.0.0.1:$CUTTLE_S3_PORT (default 9000).
# The server is s3s-fs 0.14.1 from crates.io (see README.md for why), installed once into
# $HOME/.cache/cuttle/tools and serving a real directory, so objects survive restarts.
set -euo pipefail
INFRA_NAME=s3
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT="${CUTTLE_S3_PORT:-9000}"
ENDPOINT="$HOST:$PORT"
# Fixed development credentials; the conformance tests and cuttle.example.toml use the same pair.
ACCESS_KEY=cuttle
SECRET_KEY=cuttle-secret
S3S_FS_VERSION=0.14.1 # 0.15+ needs a newer rustc than the 1.95 installed here.
TOOLS_ROOT="$CUTTLE_CACHE_DIR/tools"
BINARY="$TOOLS_ROOT/bin/s3s-fs"
DATA_DIR="${CUTTLE_S3_DATA_DIR:-$CUTTLE_CACHE_DIR/s3-data}"
PID_FILE="$CUTTLE_CACHE_DIR/s3s-fs-$PORT.pid"
LOG_FILE="$CUTTLE_CACHE_DIR/s3s-fs-$PORT.log"

# Our s3s-fs started by an older version of this script may run in a directory deleted since
# (a removed checkout); it then fails every request, so it is stopped and started afresh.
if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null \
    && [[ "$(readlink "/proc/$(cat "$PID_FILE")/cwd" 2>/dev/null)" == *" (deleted)" ]]; then
    say "s3s-fs (pid $(cat "$PID_FILE")) runs in a deleted directory; restarting it"
    kill "$(cat "$PID_FILE")"
    port_closed() { ! port_open "$HOST" "$PORT"; }
    WAIT_SECONDS=10 wait_until port_closed || die "s3s-fs did not stop within 10 s"
fi

# An S3 server has no cheap protocol ping without signing a request, so the open port is the test.
if port_open "$HOST" "$PORT"; then
    if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        say "s3s-fs (pid $(cat "$PID_FILE")) already serves $DATA_DIR"
    else
        say "something other than our s3s-fs listens on $ENDPOINT; reusing it as is"
    fi
    echo "s3: reused http://$ENDPOINT"
    exit 0
fi

if [[ ! -x "$BINARY" ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install s3s-fs but is not on PATH"
    say "installing s3s-fs $S3S_FS_VERSION into $TOOLS_ROOT (takes about 2 minutes, once)"
    # --locked uses the versions the release was tested with, which also build on rustc 1.95.
    cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --root "$TOOLS_ROOT" >&2
fi

mkdir -p "$DATA_DIR"
# s3s-fs resolves every object path against its working directory, so it must not run inside a
# checkout that may be deleted (a removed clone made every request fail with a 500).
cd "$DATA_DIR"
say "starting s3s-fs on $ENDPOINT serving $DATA_DIR (log: $LOG_FILE)"
# setsid detaches the server from this shell's session so it outlives the script; in a
# non-interactive shell the background child is not a group leader, so setsid execs in place and
# $! is the server's own pid. RUST_LOG=warn keeps the per-request log quiet.
RUST_LOG="${RUST_LOG:-warn}" nohup setsid "$BINARY" \
    --host "$HOST" --port "$PORT" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
    "$DATA_DIR" >>"$LOG_FILE" 2>&1 </dev/null &
server_pid=$!
echo "$server_pid" >"$PID_FILE"

server_ready() {
    # Stop waiting at once if the process died (port taken, bad data directory, ...).
    kill -0 "$server_pid" 2>/dev/null || die "s3s-fs exited during start-up; last log lines:
$(tail -n 20 "$LOG_FILE")"
    port_open "$HOST" "$PORT"
}
WAIT_SECONDS=30 wait_until server_ready || die "s3s-fs did not listen on $ENDPOINT within 30 s"
echo "s3: started http://$ENDPOINT"
