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
#   browser   /usr/bin/chromium + playwright-core in ~/.cache/cuttle/node-tools; tests run
#             `node infra/browser/run.mjs STEPS.json`
#   oidc      issuer http://127.0.0.1:9400, clients and accounts from infra/oidc/default-config.json
#   smtp      127.0.0.1:2525, each message saved as a .eml file in ~/.cache/cuttle/smtp-mail/2525/
# Each step is a few file checks when its dependency is already installed and running.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for dependency in postgres rabbitmq redis s3 node browser oidc smtp; do
    bash "$here/$dependency.sh" || {
        echo "$dependency: FAILED (see messages above)" >&2
        exit 1
    }
done
