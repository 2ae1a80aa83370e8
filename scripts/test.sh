#!/usr/bin/env bash
# The whole test suite, in embedded AND distributed mode, on the real dependencies.
# On a fresh Debian machine it installs and starts what is missing (infra/up.sh): PostgreSQL,
# RabbitMQ, Redis, the S3 server (s3s-fs) and Node.js; then it installs cargo-nextest if needed,
# the TypeScript client used by the end-to-end test, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One shared build directory outside the clone: a second checkout reuses the whole build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cuttle/target}"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

started=$(date +%s)
command -v cargo >/dev/null 2>&1 || {
    echo "cargo is not installed: install the Rust toolchain (rustup) first" >&2
    exit 1
}

echo "== dependencies"
bash infra/up.sh
bash infra/clean-test-data.sh

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

echo "== TypeScript client for the end-to-end test"
if [ ! -d tests/e2e-ts/node_modules/@octopusdeploy/api-client ]; then
    (cd tests/e2e-ts && npm ci --no-audit --no-fund)
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests (embedded and distributed mode)"
cargo nextest run --workspace --no-fail-fast

echo "== done in $(( $(date +%s) - started )) s"
