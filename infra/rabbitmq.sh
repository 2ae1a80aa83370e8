#!/usr/bin/env bash
# Ensures RabbitMQ answers on 127.0.0.1:5672 (AMQP, user guest/guest, which RabbitMQ only allows
# from loopback). Installs the Debian package if missing and starts the node by hand.
set -euo pipefail
INFRA_NAME=rabbitmq
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT=5672
ENDPOINT="$HOST:$PORT"

# The AMQP port is the thing clients need. rabbitmq-diagnostics ping would also prove the node is
# healthy, but it needs the Erlang cookie and takes seconds, so it is used only after a start.
if port_open "$HOST" "$PORT"; then
    echo "rabbitmq: reused $ENDPOINT"
    exit 0
fi

apt_install rabbitmq-server
[[ $(id -u) -eq 0 ]] || die "nothing answers on $ENDPOINT and starting RabbitMQ needs root"

# Keep the broker, its Erlang distribution port and epmd on loopback. Existing settings win:
# a line is added only when the key is not configured at all.
env_conf=/etc/rabbitmq/rabbitmq-env.conf
conf=/etc/rabbitmq/rabbitmq.conf
install -d /etc/rabbitmq
touch "$env_conf" "$conf"
grep -q '^NODENAME=' "$env_conf" || echo 'NODENAME=rabbit@localhost' >>"$env_conf"
grep -q '^ERL_EPMD_ADDRESS=' "$env_conf" || echo 'ERL_EPMD_ADDRESS=127.0.0.1' >>"$env_conf"
grep -q 'inet_dist_use_interface' "$env_conf" ||
    echo 'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"' >>"$env_conf"
grep -q '^listeners\.tcp' "$conf" || echo "listeners.tcp.local = $ENDPOINT" >>"$conf"

say "starting rabbitmq-server -detached"
# The Debian wrapper drops to the rabbitmq user itself; -detached returns before the node is up.
rabbitmq-server -detached >&2
say "waiting for the node to finish booting"
rabbitmqctl await_startup --timeout 120 >&2 || die "RabbitMQ did not finish starting; see /var/log/rabbitmq/"
rabbitmq-diagnostics -q ping >&2 || die "RabbitMQ started but does not answer rabbitmq-diagnostics ping"

WAIT_SECONDS=30 wait_until port_open "$HOST" "$PORT" || die "RabbitMQ did not listen on $ENDPOINT"
echo "rabbitmq: started $ENDPOINT"
