#!/usr/bin/env bash
# Ensures the headless-browser tooling for UI tests: Debian's chromium and chromium-driver, and npm
# playwright-core (major version pinned) in $HOME/.cache/cuttle/node-tools. Nothing to start: tests
# run `node infra/browser/run.mjs STEPS.json`, which launches the Debian chromium itself.
# Never `npx playwright install`: it downloads a browser build, which this network refuses.
set -euo pipefail
INFRA_NAME=browser
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
source "$here/lib-tools.sh"

PLAYWRIGHT_MAJOR=1

# Prints the first Chromium executable found ($CUTTLE_CHROMIUM wins), or nothing.
find_chromium() {
    local candidate
    for candidate in "${CUTTLE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
}

status=reused
chromium_path=$(find_chromium)
driver_path=$(command -v chromedriver || true)
if [[ -z "$chromium_path" || -z "$driver_path" ]]; then
    apt_ensure chromium chromium-driver
    status=started
    chromium_path=$(find_chromium)
    driver_path=$(command -v chromedriver || true)
    [[ -n "$chromium_path" ]] || die "no chromium executable after installing the chromium package"
fi

if [[ "$(node_tool_version playwright-core)" != "$PLAYWRIGHT_MAJOR".* ]]; then
    ensure_node_tool playwright-core "$PLAYWRIGHT_MAJOR"
    status=started
fi

chromium_version=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null || echo "?")
echo "browser: $status $chromium_path (chromium $chromium_version), ${driver_path:-no chromedriver}, playwright-core $(node_tool_version playwright-core) in $CUTTLE_NODE_TOOLS"
