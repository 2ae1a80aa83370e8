#!/usr/bin/env bash
# Ensures Node.js and npm are installed (browser tests and the OIDC test provider run on Node).
# Nothing to start: this only installs the Debian packages when `node` is missing.
set -euo pipefail
INFRA_NAME=node
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    echo "node: reused $(node --version) (npm $(npm --version))"
    exit 0
fi

apt_install nodejs npm
command -v node >/dev/null 2>&1 || die "node is still missing after installing nodejs"
echo "node: started $(node --version) (npm $(npm --version))"
