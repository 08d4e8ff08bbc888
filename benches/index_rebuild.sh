#!/usr/bin/env bash
# The app's index after a day of new photos: rebuilt from every part, or
# appended to (`index build --append`: the new part's rows only), against
# featurising as many photos, same binary, same run (issue 22).
#
#   benches/index_rebuild.sh [ROWS]     (default 100000 rows x 1280, 100 labels, parts of
#                                        10000; the day adds 10%)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000}
MORE=$((ROWS / 10))
py=.venv/bin/python
cargo build --release --quiet
bin=target/release/fruits
# shellcheck source=benches/lib.sh
source benches/lib.sh
data=target/bench/labelled-features-$((ROWS + MORE))
if [ ! -f "$data/.complete" ]; then
  rm -rf "$data"
  $py benches/make_features.py "$data" $((ROWS + MORE)) 1280 "$MORE" 100
  touch "$data/.complete"
fi
work=target/bench/index-rebuild
rm -rf "$work"
mkdir -p "$work/features"
parts=$(( (ROWS + MORE) / MORE ))
for ((i = 0; i < parts - 1; i++)); do ln -s "$PWD/$data/part-$(printf %05d $i).parquet" "$work/features/"; done
jpegs=target/bench/jpegs-2000
make_jpegs 2000 "$jpegs"
seconds() { # COMMAND...: wall seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}'
}
base=$(seconds "$bin" index build --features "$work/features" --output "$work/index")
cp -r "$work/index" "$work/appended"
ln -s "$PWD/$data/part-$(printf %05d $((parts - 1))).parquet" "$work/features/"
append=$(seconds "$bin" index build --features "$work/features" --output "$work/appended" --append)
rebuild=$(seconds "$bin" index build --features "$work/features" --output "$work/rebuilt")
feat=$(seconds "$bin" featurize --input "$jpegs" --output "$work/feat" --weights random:0 --quiet --device cpu)
per_photo=$(awk -v s="$feat" 'BEGIN {printf "%.6f", s / 2000}')
echo "| step | rows | seconds | as much as featurising |"
echo "| --- | --- | --- | --- |"
echo "| index build | $ROWS | $base | $(awk -v s="$base" -v p="$per_photo" 'BEGIN {printf "%.0f", s / p}') photos |"
echo "| the day: index build --append | +$MORE | $append | $(awk -v s="$append" -v p="$per_photo" 'BEGIN {printf "%.0f", s / p}') photos |"
echo "| the day: index build (rebuild) | $((ROWS + MORE)) | $rebuild | $(awk -v s="$rebuild" -v p="$per_photo" 'BEGIN {printf "%.0f", s / p}') photos |"
echo "| featurize (2000 JPEGs) | 2000 | $feat | |"
echo "append / rebuild: $(awk -v a="$append" -v b="$rebuild" 'BEGIN {printf "%.3f", a / b}') x the time;" \
  "the day's featurize of $MORE photos would take ~$(awk -v p="$per_photo" -v n="$MORE" 'BEGIN {printf "%.0f", p * n}') s"
