#!/usr/bin/env bash
# Is rebuilding the app's index as cheap as adding to it? `fruits index
# build` over ROWS synthetic labelled features, against featurising as many
# photos (2,000 100x100 JPEGs featurised, scaled), same binary, same run
# (issue 22). The daily job rebuilds the index from all parts: this says
# what that costs next to the day's featurize.
#
#   benches/index_rebuild.sh [ROWS]     (default 100000 rows x 1280, 100 labels)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000}
py=.venv/bin/python
cargo build --release --quiet
bin=target/release/fruits
# shellcheck source=benches/lib.sh
source benches/lib.sh
data=target/bench/labelled-features-$ROWS
if [ ! -f "$data/.complete" ]; then
  rm -rf "$data"
  $py benches/make_features.py "$data" "$ROWS" 1280 10000 100
  touch "$data/.complete"
fi
jpegs=target/bench/jpegs-2000
make_jpegs 2000 "$jpegs"
seconds() { # COMMAND...: wall seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2> target/bench/index-rebuild.err || { cat target/bench/index-rebuild.err >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}'
}
build=$(seconds "$bin" index build --features "$data" --output target/bench/index-rebuild)
feat=$(seconds "$bin" featurize --input "$jpegs" --output target/bench/index-feat --weights random:0 --overwrite --quiet --device cpu)
per_row_build=$(awk -v s="$build" -v n="$ROWS" 'BEGIN {printf "%.6f", s / n}')
per_photo=$(awk -v s="$feat" 'BEGIN {printf "%.6f", s / 2000}')
echo "index build, $ROWS rows x 1280: $build s ($(awk -v x="$per_row_build" 'BEGIN {printf "%.1f", x * 1e6}') us a row)"
echo "featurize, 2000 photos: $feat s ($(awk -v x="$per_photo" 'BEGIN {printf "%.0f", x * 1e6}') us a photo)"
echo "rebuilding the index costs $(awk -v a="$per_row_build" -v b="$per_photo" 'BEGIN {printf "%.4f", a / b}') x featurising as many photos:" \
  "a daily rebuild over all rows costs as much as featurising $(awk -v a="$per_row_build" -v b="$per_photo" 'BEGIN {printf "%.1f", 100 * a / b}')% of them"
