#!/usr/bin/env bash
# Time and peak memory of `fruits pca fit` on synthetic features.
#
#   benches/pca.sh [ROWS]     (default 100000 rows x 1280, parts of 10000 rows)
#
# Three runs: fit reading every row (no statistics files), `pca stats` writing
# the statistics files, and fit from those files alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000}
data=target/bench/features-$ROWS
if [ ! -f "$data/.complete" ]; then
  .venv/bin/python -c 'import numpy' 2>/dev/null || .venv/bin/python -m pip install --quiet numpy
  rm -rf "$data"
  .venv/bin/python benches/make_features.py "$data" "$ROWS"
  touch "$data/.complete"
fi
rm -f "$data"/*.stats.safetensors
cargo build --release --quiet
measure() { # LABEL COMMAND...
  local label=$1
  shift
  /usr/bin/time -f "%M %e" -o target/bench/time.txt "$@" 2> target/bench/stderr.txt || { cat target/bench/stderr.txt; exit 1; }
  read -r rss wall < target/bench/time.txt
  printf '%-28s wall %6.2f s   peak RSS %5.0f MiB\n' "$label" "$wall" "$(echo "$rss / 1024" | bc -l)"
}
measure "fit from rows ($ROWS)" target/release/fruits pca fit --features "$data" --k 50 --output target/bench/pca
measure "pca stats ($ROWS)" target/release/fruits pca stats --features "$data"
measure "fit from statistics" target/release/fruits pca fit --features "$data" --k 50 --output target/bench/pca
