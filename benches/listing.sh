#!/usr/bin/env bash
# Listing a prefix of many keys (issue 23): one sequential `fruits list`
# against the driver's listing in slices on SLOTS executors at once, from a
# local S3-compatible server (moto) behind a proxy adding DELAY_MS to every
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
mkdir -p "$work"
exec 3< <($py tests/s3_helper.py serve 2>/dev/null)
read -r _ port <&3
trap '{ kill $(jobs -p); pkill -f "s3_helper.py (serve|proxy)"; } 2> /dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
direct=http://127.0.0.1:$port
$py tests/s3_helper.py bucket "$direct" bench eu-west-1
pids=()
for f in $(seq -w 1 "$FOLDERS"); do
  $py tests/s3_helper.py many "$direct" bench "photos/Label$f/" "$PER_FOLDER" &
  pids+=($!)
done
wait "${pids[@]}"
exec 4< <($py tests/s3_helper.py proxy "$port" --delay-ms "$DELAY" 2>/dev/null)
read -r _ slow <&4
ep=http://127.0.0.1:$slow
start=$(date +%s.%N)
"$FRUITS_BIN" --s3-endpoint "$ep" --region eu-west-1 list s3://bench/photos/ > "$work/sequential.txt"
seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
echo "$((FOLDERS * PER_FOLDER)) keys in $FOLDERS folders, +$DELAY ms a request"
$py benches/listing.py "$FRUITS_BIN" "$ep" s3://bench/photos/ s3://bench/run/ "$SLOTS" "$work/sequential.txt" "$seconds"
