#!/usr/bin/env bash
# Ensures Redis answers on 127.0.0.1:6379. It is a cache and lock service for us, so the server we
# start keeps nothing on disk (no RDB snapshots, no append-only file).
set -euo pipefail
INFRA_NAME=redis
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT="${CUTTLE_REDIS_PORT:-6379}"
ENDPOINT="$HOST:$PORT"

# `redis-cli ping` proves it is Redis and not just an open port; before install, test the port.
redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" == "PONG" ]]
    else
        port_open "$HOST" "$PORT"
    fi
}

if redis_answers; then
    echo "redis: reused $ENDPOINT"
    exit 0
fi

apt_install redis-server
say "starting redis-server on $ENDPOINT"
redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no \
    --logfile "$CUTTLE_CACHE_DIR/redis.log" >&2

WAIT_SECONDS=30 wait_until redis_answers || die "Redis did not answer on $ENDPOINT within 30 s"
echo "redis: started $ENDPOINT"
