#!/usr/bin/env bash
# `fruits serve` under a bounded loopback load, side by side with `fruits
# featurize` on the same machine, binary and photos; and `identify` latency
# and 1,000,000-vector search (issue 12); then the same load with hostile
# clients mixed in (issue 21): the good clients' throughput, p99 and errors
# side by side with the clean run.
#
#   benches/serve.sh [BIN] [SECONDS] [CLIENTS] [HOSTILE: SILENT SLOW BOMBS]
#
# BIN defaults to the release build (built if missing). The load is wrk
# (Debian's package, installed if missing): CLIENTS connections for SECONDS
# each POSTing a 100x100 sample JPEG. Reports: featurize images/s (2,000
# JPEGs), serve requests/s and their ratio, latency p50/p99, errors, and the
# server's resident memory before and after the load (flat = no leak).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/fruits}
secs=${2:-30}
clients=${3:-32}
hostile=${4:-16 16 2}
[ -x "$bin" ] || cargo build --release --quiet
command -v wrk > /dev/null || { echo "installing wrk (Debian)" >&2; apt-get install -y -q wrk > /dev/null; }

# shellcheck source=benches/lib.sh
source benches/lib.sh
work=target/bench/serve
mkdir -p "$work"
data=target/bench/jpegs-2000
make_jpegs 2000 "$data"
photo=tests/data/fruits-360-sample/Test/Kiwi/f0_100.jpg

echo "== featurize: 2,000 JPEGs, batch 64, all cores"
"$bin" featurize --input "$data" --output "$work/features" --weights random:0 --overwrite --quiet 2> "$work/featurize.txt"
feat=$(grep -oE '[0-9.]+ images/s' "$work/featurize.txt" | head -1 | cut -d' ' -f1)
echo "featurize: $feat images/s"

echo "== identify: one photo, warm, in process (p50 target <= 10 ms)"
"$bin" demo --weights random:0 --output "$work/demo" > /dev/null 2>&1
"$bin" bench identify "$photo" --index "$work/demo/index" --runs 300 2> /dev/null

echo "== search: 1,000,000 synthetic unit vectors of width 64 (target <= 10 ms per query)"
"$bin" bench search --vectors 1000000 --dim 64 --queries 100
py=.venv/bin/python
[ -x "$py" ] || py=python3
"$py" benches/search_numpy.py 1000000 64 100 5 || echo "(numpy peer skipped: no numpy; .ci/run makes .venv with it)"

echo "== serve: $clients clients for $secs s"
"$bin" serve --index "$work/demo/index" --addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
trap 'kill $pid 2> /dev/null || true' EXIT
for _ in $(seq 100); do grep -q metrics "$work/serve.out" && break; sleep 0.1; done
url=$(grep -oE 'http://[0-9.:]+' "$work/serve.out" | head -1)
metrics=$(grep -oE 'http://[0-9.:]+' "$work/serve.out" | sed -n 2p)
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
PHOTO=$photo wrk -t1 -c"$clients" -d5s -s benches/post_photo.lua "$url" > /dev/null   # warm-up
before=$(rss)
PHOTO=$photo wrk -t1 -c"$clients" -d"${secs}s" --latency -s benches/post_photo.lua "$url" | tee "$work/wrk.txt"
after=$(rss)
PHOTO=$photo wrk -t1 -c"$clients" -d"${secs}s" -s benches/post_photo.lua "$url" > /dev/null
again=$(rss)
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
errors=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
curl -s "$metrics/metrics" | grep -E '^fruits_batch_size_(sum|count)' | tr '\n' ' '
echo

read -ra hostile_args <<< "$hostile"
echo "== serve with hostile clients: silent, slow and huge-pixel (SILENT SLOW BOMBS = $hostile)"
"$py" benches/hostile_clients.py "$url" "$secs" "${hostile_args[@]}" > "$work/hostile.json" &
hpid=$!
sleep 2   # the hostile clients take their sockets first
PHOTO=$photo wrk -t1 -c"$clients" -d"${secs}s" --latency -s benches/post_photo.lua "$url" | tee "$work/wrk-hostile.txt"
wait $hpid
cat "$work/hostile.json"
kill -TERM $pid
wait $pid
echo "serve: $rps requests/s = $(awk -v r="$rps" -v f="$feat" 'BEGIN {printf "%.2f", r / f}') x featurize's $feat images/s;" \
  "non-2xx: ${errors:-0}; RSS ${before} MiB before, ${after} MiB after ${secs} s, ${again} MiB after $((2 * secs)) s"
p99() { awk '$1 == "99%" {print $2}' "$1"; }
echo "| good clients ($clients) | requests/s | p99 | non-2xx | socket errors |"
echo "| --- | --- | --- | --- | --- |"
for run in clean hostile; do
  f="$work/wrk.txt"; [ "$run" = hostile ] && f="$work/wrk-hostile.txt"
  echo "| $run | $(awk '/Requests\/sec/ {print $2}' "$f") | $(p99 "$f") | $(awk '/Non-2xx/ {print $NF}' "$f" | grep . || echo 0) |" \
    "$(grep -oE 'Socket errors:.*' "$f" || echo none) |"
done
