#!/usr/bin/env bash
# A cluster task's fixed cost against its work (issue 23): `fruits
# featurize` of 1 photo (process start, weights mapped and checked, model
# built, output folder peeked, part committed) and of N photos, the same
# binary, weights and photos, median of 3 each; then the fixed cost's share
# of a task at the driver's old default (2,000 photos a task) and at the new
# one (TASK_SECONDS of work at the node's rate, emr/fruits_emr/prices.py),
# at this machine's measured rate. CPU only: on a GPU, add NVRTC's
# compilation at every model load (not measured here: no GPU).
#
#   benches/task_overhead.sh [N]     (default 400 100x100 JPEGs)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}
py=$PWD/.venv/bin/python
if [ -z "${FRUITS_BIN:-}" ]; then
  cargo build --release --quiet
  FRUITS_BIN=$PWD/target/release/fruits
fi
# shellcheck source=benches/lib.sh
source benches/lib.sh
work=target/bench/task-overhead
rm -rf "$work"
mkdir -p "$work"
data=target/bench/jpegs-$N
make_jpegs "$N" "$data"
find "$PWD/$data" -name '*.jpg' | sort > "$work/all.txt"
head -1 "$work/all.txt" > "$work/one.txt"
"$FRUITS_BIN" weights init --model mobilenetv2 --seed 0 --out "$work/w.safetensors" > /dev/null
seconds() { # KEYS RUN: seconds of one featurize of KEYS into a new folder
  local start
  start=$(date +%s.%N)
  "$FRUITS_BIN" featurize --keys "$1" --output "$work/out-$2" --weights "$work/w.safetensors" --quiet --device cpu
  awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'
}
median() { sort -g | sed -n 2p; }
one=$(for r in 1 2 3; do seconds "$work/one.txt" "one-$r"; done | median)
all=$(for r in 1 2 3; do seconds "$work/all.txt" "all-$r"; done | median)
"$py" - "$one" "$all" "$N" <<'PY'
import os, sys
sys.path.insert(0, "emr")
from fruits_emr import prices
one, all_, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
per_image = (all_ - one) / (n - 1)
fixed = one - per_image
rate = 1 / per_image
new = max(2000, int(round(rate * prices.TASK_SECONDS, -3)))
print(f"featurize of 1 photo {one:.3f} s, of {n} photos {all_:.3f} s (median of 3 each):")
print(f"fixed cost a task {fixed:.3f} s; work {per_image * 1000:.2f} ms a photo ({rate:.0f} photos/s on {os.cpu_count()} cores)")
print("| photos a task | work s | fixed cost's share |")
print("| --- | --- | --- |")
for label, p in (("2,000 (old default)", 2000), (f"{new:,} (new: {prices.TASK_SECONDS} s at this rate)", new)):
    work = p * per_image
    print(f"| {label} | {work:.1f} | {fixed / (fixed + work):.2%} |")
t = prices.table()
for node in ("c5.2xlarge", "g4dn.xlarge"):
    print(f"{node}: --images-per-partition {prices.images_per_task(t, node):,} from the price table's rate")
PY
