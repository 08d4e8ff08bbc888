#!/usr/bin/env bash
# Objects/s fetched from a local S3-compatible server (moto, on loopback),
# with 1 and 64 requests in flight, directly and through a proxy adding
# ~20 ms per request (what an S3 round trip costs from EMR).
#
#   benches/s3_fetch.sh [N]      (default 2000 objects of ~3.5 KB, a sample JPEG)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
py=.venv/bin/python
cargo build --release --quiet
exec 3< <($py tests/s3_helper.py serve 2>/dev/null)
read -r _ port <&3
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "s3_helper.py (serve|proxy)" 2>/dev/null || true' EXIT
ep=http://127.0.0.1:$port
$py tests/s3_helper.py bucket "$ep" bench-photos eu-west-1
$py tests/s3_helper.py many "$ep" bench-photos photos/Apple/ "$N" tests/data/fruits-360-sample/Training/Apple/0_100.jpg
exec 4< <($py tests/s3_helper.py proxy "$port" --delay-ms 20 2>/dev/null)
read -r _ slow <&4
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
for c in 1 64; do
  echo -n "direct, $c in flight:  "; target/release/fruits --s3-endpoint "$ep" --s3-concurrency $c bench fetch s3://bench-photos/photos/ 2>/dev/null
done
for c in 1 64; do
  echo -n "+20 ms, $c in flight:  "; target/release/fruits --s3-endpoint "http://127.0.0.1:$slow" --s3-concurrency $c bench fetch s3://bench-photos/photos/ 2>/dev/null
done
