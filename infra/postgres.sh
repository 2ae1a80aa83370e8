#!/usr/bin/env bash
# Ensures PostgreSQL answers on 127.0.0.1:5432 with trust authentication for user `postgres`.
# Installs the Debian package if missing, reuses a server that already answers, and otherwise
# starts one by hand (there is no systemd here, so `service`/`systemctl` are not an option).
set -euo pipefail
INFRA_NAME=postgres
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT="${CUTTLE_PG_PORT:-5432}"
ENDPOINT="$HOST:$PORT"

# pg_isready speaks the protocol, so it also catches a port held by something that is not
# PostgreSQL; before the client is installed we can only test the port.
postgres_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$HOST" -p "$PORT"
    else
        port_open "$HOST" "$PORT"
    fi
}

if postgres_answers; then
    echo "postgres: reused $ENDPOINT"
    exit 0
fi

apt_install postgresql
[[ $(id -u) -eq 0 ]] || die "nothing answers on $ENDPOINT and starting PostgreSQL needs root"

# The Debian socket directory lives on /run, which is empty after a container restart.
install -d -o postgres -g postgres -m 2775 /var/run/postgresql

# Tests and services connect as `postgres` over TCP without a password. Debian's generated
# pg_hba.conf asks for one over TCP, so a dev/CI cluster gets explicit trust lines for loopback.
ensure_trust() {
    local hba="$1"
    if ! grep -qE '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        say "adding loopback trust authentication to $hba (development machine only)"
        sed -i '1i host all all 127.0.0.1/32 trust\nlocal all all trust' "$hba"
    fi
}

cluster_line=""
if command -v pg_lsclusters >/dev/null 2>&1; then
    cluster_line=$(pg_lsclusters --no-header 2>/dev/null | awk -v port="$PORT" '$3 == port' | head -n1)
fi

if [[ -n "$cluster_line" ]]; then
    read -r version cluster _ <<<"$cluster_line"
    ensure_trust "/etc/postgresql/$version/$cluster/pg_hba.conf"
    say "starting cluster $version/$cluster with pg_ctlcluster"
    # --skip-systemctl-redirect: without it pg_ctlcluster hands off to systemctl, which is absent.
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start >&2
else
    # No Debian cluster on our port (dropped, or another port was asked for): run a private
    # data directory owned by postgres, one per port so that instances never share one.
    bin_dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    [[ -x "$bin_dir/initdb" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    instance_dir="/var/lib/postgresql/cuttle-$PORT"
    data_dir="$instance_dir/data"
    log_file="$instance_dir/postgres.log"
    if [[ ! -f "$data_dir/PG_VERSION" ]]; then
        say "initialising $data_dir with initdb -A trust"
        install -d -o postgres -g postgres -m 700 "$instance_dir" "$data_dir"
        runuser -u postgres -- "$bin_dir/initdb" -A trust -U postgres -D "$data_dir" >&2
    fi
    say "starting $data_dir with pg_ctl"
    runuser -u postgres -- "$bin_dir/pg_ctl" -w -D "$data_dir" -l "$log_file" \
        -o "-c listen_addresses=$HOST -p $PORT -c unix_socket_directories=/var/run/postgresql" \
        start >&2
fi

WAIT_SECONDS=60 wait_until postgres_answers || die "PostgreSQL did not answer on $ENDPOINT within 60 s"
echo "postgres: started $ENDPOINT"
