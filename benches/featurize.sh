#!/usr/bin/env bash
# End-to-end throughput and peak memory of `fruits featurize` on CPU.
#
#   benches/featurize.sh [N] [MODEL] [extra featurize flags...]
#
# Makes N 100x100 JPEGs (the 19 sample photos of tests/data, cycled, in a
# Fruits-360 layout) under target/bench/, runs the release binary on them with
# random weights, and prints images/s and the peak resident memory
# (GNU time's maximum RSS). Run it twice with different N to see that memory
# does not grow with the input.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
MODEL=${2:-mobilenetv2}
shift $(( $# > 2 ? 2 : $# ))

# shellcheck source=benches/lib.sh
source benches/lib.sh
data=target/bench/jpegs-$N
make_jpegs "$N" "$data"

cargo build --release --quiet
out=target/bench/out-$MODEL-$N
/usr/bin/time -f "peak_rss_mib=%M wall_s=%e" -o target/bench/time.txt \
  target/release/fruits featurize --input "$data" --output "$out" --model "$MODEL" \
  --weights random:0 --quiet "$@" 2> target/bench/stderr.txt || { cat target/bench/stderr.txt; exit 1; }
grep -E "featurised" target/bench/stderr.txt
awk -F'[ =]' '{printf "peak RSS %.0f MiB, wall %s s\n", $2/1024, $4}' target/bench/time.txt
