#!/usr/bin/env bash
# Brings up every external dependency Cuttle's tests and dev services use, reusing whatever
# already runs. Prints one line per dependency; details go to stderr. Safe to run repeatedly.
#
# Fixed endpoints (nothing is exported; configure services and tests with these):
#   postgres  postgres://postgres@127.0.0.1:5432/postgres   (trust authentication)
#   rabbitmq  amqp://guest:guest@127.0.0.1:5672/%2f
#   redis     redis://127.0.0.1:6379
#   s3        http://127.0.0.1:9000  access key `cuttle`, secret `cuttle-secret`, region us-east-1,
#             path-style addressing
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for dependency in postgres rabbitmq redis s3 node; do
    bash "$here/$dependency.sh" || {
        echo "$dependency: FAILED (see messages above)" >&2
        exit 1
    }
done
