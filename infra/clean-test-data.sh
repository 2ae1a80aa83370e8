#!/usr/bin/env bash
# Removes what earlier test runs may have left on the shared dependencies: PostgreSQL databases
# named cuttle_test_* (a test that fails keeps its database for inspection), and RabbitMQ queues
# and exchanges prefixed cuttle-test-. Safe to run repeatedly; touches nothing else.
set -euo pipefail

if command -v psql >/dev/null 2>&1; then
    databases=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'cuttle\_test\_%'" 2>/dev/null || true)
    count=0
    for db in $databases; do
        psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 && count=$((count + 1))
    done
    echo "postgres: removed $count leftover test databases"
fi

if command -v rabbitmqctl >/dev/null 2>&1; then
    # One eval instead of a rabbitmqctl call per queue: each call starts an Erlang VM (~1 s), and
    # distributed tests leave a few queues each. Only names starting with cuttle-test- go.
    queues=$(rabbitmqctl -q eval 'Qs = [Q || Q <- rabbit_amqqueue:list(), binary:match(element(4, amqqueue:get_name(Q)), <<"cuttle-test-">>) =:= {0,12}], [rabbit_amqqueue:delete(Q, false, false, <<"cuttle-cleanup">>) || Q <- Qs], length(Qs).' 2>/dev/null || echo "?")
    exchanges=$(rabbitmqctl -q eval 'Xs = [X || X <- rabbit_exchange:list(), binary:match(element(4, element(2, X)), <<"cuttle-test-">>) =:= {0,12}], [rabbit_exchange:delete(element(2, X), false, <<"cuttle-cleanup">>) || X <- Xs], length(Xs).' 2>/dev/null || echo "?")
    echo "rabbitmq: removed $queues leftover test queues and $exchanges exchanges"
fi

if command -v redis-cli >/dev/null 2>&1; then
    count=$(redis-cli -h 127.0.0.1 --scan --pattern 'cuttle-test:*' 2>/dev/null | xargs -r -n 500 redis-cli -h 127.0.0.1 del 2>/dev/null | awk '{s+=$1} END {print s+0}')
    echo "redis: removed $count leftover test keys"
fi
