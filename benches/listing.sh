#!/usr/bin/env bash
# Listing a prefix of many keys (issue 23): one sequential `fruits list`
# against the driver's listing in slices on SLOTS executors at once, from a
# local S3-compatible server (s3s-fs) behind a proxy adding DELAY_MS to every
# request (an S3 round trip from EMR). benches/listing.py says what is printed.
#
#   benches/listing.sh [FOLDERS] [PER_FOLDER] [DELAY_MS] [SLOTS]   (defaults: 16 2000 20 8)
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDERS=${1:-16}
PER_FOLDER=${2:-2000}
DELAY=${3:-20}
SLOTS=${4:-8}
py=$PWD/.venv/bin/python
if [ -z "${FRUITS_BIN:-}" ]; then
  cargo build --release --quiet
  FRUITS_BIN=$PWD/target/release/fruits
fi
work=target/bench/listing
rm -rf "$work"
mkdir -p "$work/root/bench"
# s3s-fs (a Rust S3 server over a folder, .ci/run installs it): the photos
# are files made in its folder, and its LIST costs little next to the
# latency; moto's, in Python, costs ~0.3 s a page and would be the bench.
s3s=${FRUITS_S3S_FS:-$PWD/.tools/bin/s3s-fs}
[ -x "$s3s" ] || { echo "no s3s-fs at $s3s: run .ci/run once, or set FRUITS_S3S_FS" >&2; exit 1; }
"$py" - "$work/root/bench/photos" "$FOLDERS" "$PER_FOLDER" <<'PY'
import os, sys
root, folders, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for f in range(1, folders + 1):
    d = os.path.join(root, f"Label{f:03d}")
    os.makedirs(d)
    for i in range(per):
        with open(os.path.join(d, f"{i:05d}.jpg"), "wb") as out:
            out.write(b"x")
PY
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$s3s" --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench "$work/root" > /dev/null 2>&1 &
trap '{ kill $(jobs -p); pkill -f "s3_helper.py proxy"; } 2> /dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
until (exec 5<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; do sleep 0.1; done
exec 4< <($py tests/s3_helper.py proxy "$port" --delay-ms "$DELAY" 2>/dev/null)
read -r _ slow <&4
ep=http://127.0.0.1:$slow
start=$(date +%s.%N)
"$FRUITS_BIN" --s3-endpoint "$ep" --region eu-west-1 list s3://bench/photos/ > "$work/sequential.txt"
seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
echo "$((FOLDERS * PER_FOLDER)) keys in $FOLDERS folders, +$DELAY ms a request"
$py benches/listing.py "$FRUITS_BIN" "$ep" s3://bench/photos/ s3://bench/run/ "$SLOTS" "$work/sequential.txt" "$seconds"
