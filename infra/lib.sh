# Shared helpers for the infra/*.sh scripts. Sourced, never run directly.
#
# Conventions every script follows, so that `up.sh` can print one line per dependency:
#   * progress and diagnostics go to stderr, prefixed with the dependency name;
#   * the last line on stdout is "<name>: reused <endpoint>" or "<name>: started <endpoint>";
#   * running a script twice is harmless: whatever already answers is reused, never restarted.

# Where per-user state (tool binaries, data, pidfiles, logs) lives; shared with the cargo target dir.
CUTTLE_CACHE_DIR="${CUTTLE_CACHE_DIR:-$HOME/.cache/cuttle}"

# Prints a progress message for dependency $INFRA_NAME to stderr.
say() {
    echo "[${INFRA_NAME:-infra}] $*" >&2
}

# Prints an error to stderr and exits the script.
die() {
    echo "[${INFRA_NAME:-infra}] ERROR: $*" >&2
    exit 1
}

# Succeeds when something accepts TCP connections on host $1 port $2.
# Uses bash's /dev/tcp so the check needs no client tool that might not be installed yet.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Retries command "$@" once a second until it succeeds or $WAIT_SECONDS (default 60) pass.
wait_until() {
    local deadline=$((SECONDS + ${WAIT_SECONDS:-60}))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 1
    done
}

# Installs the given apt packages, running `apt-get update` at most once per script run.
# Does nothing (and needs no root) when every package is already installed.
apt_install() {
    local missing=()
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        die "apt packages missing (${missing[*]}); run this script as root to install them"
    fi
    say "installing ${missing[*]} with apt-get"
    if [[ -z "${APT_UPDATED:-}" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    # Package post-install scripts try to start services through systemd or invoke-rc.d; on a
    # machine without an init system that start fails or is skipped, which is fine because each
    # script starts its server by hand right after.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

mkdir -p "$CUTTLE_CACHE_DIR"
