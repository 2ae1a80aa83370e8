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
    count=0
    while read -r queue; do
        [ -n "$queue" ] || continue
        rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 && count=$((count + 1))
    done < <(rabbitmqctl -q list_queues name 2>/dev/null | grep '^cuttle-test-' || true)
    echo "rabbitmq: removed $count leftover test queues"
fi
