# shellcheck shell=bash
# Helpers for the test-tool scripts (browser.sh, oidc.sh, smtp.sh). Sourced after lib.sh, never
# run directly.
#
# npm packages (playwright-core, oidc-provider) go into one project-local prefix,
# $CUTTLE_NODE_TOOLS (default $HOME/.cache/cuttle/node-tools), never into the checkout and never
# globally. infra/browser/run.mjs and infra/oidc/provider.mjs resolve them from there with the
# same default.

CUTTLE_NODE_TOOLS="${CUTTLE_NODE_TOOLS:-$CUTTLE_CACHE_DIR/node-tools}"

# Ensures `node` and `npm` are on PATH, installing them through node.sh when they are missing.
ensure_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        return 0
    fi
    bash "$(dirname "${BASH_SOURCE[0]}")/node.sh" >&2 || die "node.sh could not install Node.js"
}

# Prints the installed version of npm package $1 in $CUTTLE_NODE_TOOLS, or nothing.
node_tool_version() {
    local manifest="$CUTTLE_NODE_TOOLS/node_modules/$1/package.json"
    [[ -f "$manifest" ]] || return 0
    # A plain text match keeps this check free of a node start-up (~50 ms) on every no-op run.
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest" | head -n1
}

# Ensures npm package $1 at major version $2 is installed in $CUTTLE_NODE_TOOLS.
# Fast when it is: one file read, no npm call. Concurrent callers are serialised with flock.
ensure_node_tool() {
    local package="$1" major="$2" version
    version=$(node_tool_version "$package")
    if [[ "${version%%.*}" == "$major" ]]; then
        return 0
    fi
    ensure_node
    mkdir -p "$CUTTLE_NODE_TOOLS"
    (
        flock 9
        # Another process may have installed it while this one waited for the lock.
        version=$(node_tool_version "$package")
        if [[ "${version%%.*}" == "$major" ]]; then
            exit 0
        fi
        if [[ ! -f "$CUTTLE_NODE_TOOLS/package.json" ]]; then
            printf '{\n  "name": "cuttle-node-tools",\n  "private": true\n}\n' \
                >"$CUTTLE_NODE_TOOLS/package.json"
        fi
        say "installing npm $package@$major into $CUTTLE_NODE_TOOLS${version:+ (found $version)}"
        npm install --prefix "$CUTTLE_NODE_TOOLS" --no-audit --no-fund --loglevel=error \
            "$package@$major" >&2
    ) 9>"$CUTTLE_NODE_TOOLS.lock"
    version=$(node_tool_version "$package")
    [[ "${version%%.*}" == "$major" ]] || die "npm $package@$major is still missing from $CUTTLE_NODE_TOOLS"
}

# Like lib.sh's apt_install, but when not root it goes through `sudo -n` where sudo is available
# instead of giving up. Does nothing (and needs no privilege) when every package is installed.
apt_ensure() {
    if [[ $(id -u) -eq 0 ]]; then
        apt_install "$@"
        return
    fi
    local missing=() package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
        die "apt packages missing (${missing[*]}); run this script as root or with password-less sudo"
    fi
    say "installing ${missing[*]} with sudo apt-get"
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# Prints the pid in pid file $1 when that process is alive; fails otherwise.
live_pid() {
    local pid
    [[ -f "$1" ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# Stops the process recorded in pid file $1 (TERM, then KILL after 10 s) and removes the file.
# Prints what it did to stderr; succeeds when nothing was running.
stop_pid_file() {
    local pid_file="$1" pid
    if ! pid=$(live_pid "$pid_file"); then
        rm -f "$pid_file"
        return 0
    fi
    say "stopping pid $pid ($pid_file)"
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "pid $pid ignored TERM for 10 s; sending KILL"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pid_file"
}
