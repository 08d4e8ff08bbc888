#!/usr/bin/env bash
# PCA fit from many parts (issue 23): flat against a tree of merges, same
# folder, same run (benches/pca_merge.py says what is printed).
#
#   benches/pca_merge.sh [PARTS] [WIDTH] [FAN_IN]    (defaults: 5000 256 64)
#
# The parts are synthetic (benches/stats_parts.py: 4 rows each, a statistics
# file and a manifest each, as featurize commits them), made once under
# target/bench/. Width 256 keeps 5,000 statistics files at 1.3 GB; at 1,280
# (MobileNetV2) a file is 6.5 MB, 25x the bytes for the same count.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:-5000}
WIDTH=${2:-256}
FAN_IN=${3:-64}
py=$PWD/.venv/bin/python
if [ -z "${FRUITS_BIN:-}" ]; then
  cargo build --release --quiet
  FRUITS_BIN=$PWD/target/release/fruits
fi
work=target/bench/pca-merge-$PARTS-$WIDTH
if [ ! -f "$work/complete" ]; then
  rm -rf "$work"
  "$py" benches/stats_parts.py "$work/features" "$PARTS" "$WIDTH"
  touch "$work/complete"
fi
rm -rf "$work/flat" "$work/tree" "$work/stats"
"$py" benches/pca_merge.py "$FRUITS_BIN" "$work" "$FAN_IN" 16
