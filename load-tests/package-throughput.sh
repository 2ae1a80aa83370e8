#!/usr/bin/env bash
# Upload and download throughput of a 1 GiB package through Cuttle's built-in feed, and the
# serving process's peak RSS (VmHWM), in embedded mode (`cuttle server`: SQLite, local blobs) and
# distributed mode (`cuttle api` on PostgreSQL + the S3 server; the feed's logic runs in the api
# process). Needs infra/up.sh's services. Loopback only; one upload and one download per mode.
#   bash load-tests/package-throughput.sh [path/to/cuttle]
set -euo pipefail
cuttle="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/cuttle/target}/debug/cuttle}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
package="$work/Big.Package.1.0.0.zip"
key=API-THROUGHPUTTHROUGHPUT1

# A stored (uncompressed) zip of 1 GiB of random bytes plus a Deploy.sh.
python3 - "$package" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", compression=zipfile.ZIP_STORED) as z:
    with z.open("payload.bin", "w", force_zip64=True) as f:
        chunk = os.urandom(8 * 1024 * 1024)
        for _ in range(128):
            f.write(chunk)
    z.writestr("Deploy.sh", "echo deployed\n")
EOF
size=$(stat -c %s "$package")

measure() { # name port pid
    local name=$1 port=$2 pid=$3 t0 t1 t2 code hwm
    t0=$(date +%s.%N)
    code=$(curl -s -o "$work/upload.json" -w "%{http_code}" -H "X-Octopus-ApiKey: $key" \
        -F "fileToUpload=@$package" "http://127.0.0.1:$port/api/Spaces-1/packages/raw")
    t1=$(date +%s.%N)
    curl -s -o /dev/null -H "X-Octopus-ApiKey: $key" \
        "http://127.0.0.1:$port/api/Spaces-1/packages/packages-Big.Package.1.0.0/raw"
    t2=$(date +%s.%N)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    [ "$code" = 201 ] || { echo "$name: upload failed with HTTP $code: $(cat "$work/upload.json")" >&2; return 1; }
    awk -v n="$name" -v s="$size" -v a="$t0" -v b="$t1" -v d="$t2" -v h="$hwm" 'BEGIN {
        mb = s / 1048576
        printf "| %s | %.0f MB/s (%.1f s) | %.0f MB/s (%.1f s) | %.0f MB |\n", n, mb/(b-a), b-a, mb/(d-b), d-b, h/1024 }'
}

echo "| mode | upload | download | peak RSS of the serving process |"
echo "|---|---:|---:|---:|"
CUTTLE_ADMIN_API_KEY=$key "$cuttle" server --listen 127.0.0.1:18200 --data-dir "$work/embedded" >"$work/embedded.log" 2>&1 &
pid=$!
sleep 1.5
measure embedded 18200 $pid
kill $pid; wait $pid 2>/dev/null || true

db="cuttle_test_throughput_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
env CUTTLE_DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" CUTTLE_BUS__KIND=rabbitmq \
    CUTTLE_BUS__URL='amqp://guest:guest@127.0.0.1:5672/%2f' CUTTLE_BUS__PREFIX="cuttle-test-tp$$." \
    CUTTLE_CACHE__KIND=redis CUTTLE_CACHE__URL=redis://127.0.0.1:6379 CUTTLE_CACHE__PREFIX="cuttle-test:tp$$:" \
    CUTTLE_BLOB__KIND=s3 CUTTLE_BLOB__ENDPOINT=http://127.0.0.1:9000 CUTTLE_BLOB__BUCKET="cuttle-tp-$$" \
    CUTTLE_BLOB__ACCESS_KEY_ID=cuttle CUTTLE_BLOB__SECRET_ACCESS_KEY=cuttle-secret \
    CUTTLE_ADMIN_API_KEY=$key CUTTLE_SERVER__DATA_DIR="$work/distributed" \
    RUST_LOG=info,cuttle_blob=debug bash -c "
        '$cuttle' migrate >/dev/null
        exec '$cuttle' api --listen 127.0.0.1:18201" >"$work/api.log" 2>&1 &
pid=$!
sleep 2
measure distributed 18201 $pid
kill $pid; wait $pid 2>/dev/null || true
# How the upload's time splits between sending the parts and S3's CompleteMultipartUpload.
grep -o '"parts_ms":[0-9]*,"complete_ms":[0-9]*' "$work/api.log" | tr -d '"' | sed 's/^/S3 upload of the distributed push: /' || true
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
