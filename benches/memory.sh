#!/usr/bin/env bash
# Peak memory of `fruits featurize` whatever the input: 2,000 small photos,
# then the same 2,000 plus 20 huge ones (8000x6000 JPEGs, 48 MP), with
# --threads 2 (this machine) and --threads 16 (a 16-core node's decode pool).
#
#   benches/memory.sh [BINARY...]      (default: target/release/fruits)
#
# Pass an older build as a second binary to compare side by side. Peak RSS is
# GNU time's maximum resident set size; weights come from a file (random
# init, written once), so the number is the run's own, not the init's.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=("$@")
[ ${#bins[@]} -gt 0 ] || { cargo build --release --quiet; bins=(target/release/fruits); }

# shellcheck source=benches/lib.sh
source benches/lib.sh
small=target/bench/jpegs-2000
make_jpegs 2000 "$small"

mixed=target/bench/jpegs-2000-huge-20
if [ ! -f "$mixed/.complete" ]; then
  rm -rf "$mixed"
  cp -r "$small" "$mixed"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -c 'import PIL' 2>/dev/null || .venv/bin/python -m pip install --quiet pillow
  .venv/bin/python - "$mixed/Training/Huge" <<'PY'
import os, sys
from PIL import Image
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
w, h = 8000, 6000
gradient = Image.linear_gradient("L").resize((w, h))
for i in range(20):
    noise = Image.effect_noise((w, h), 40 + i)
    img = Image.merge("RGB", (gradient, noise, gradient.rotate(180)))
    img.save(f"{out}/huge-{i:02d}.jpg", quality=90)
PY
  touch "$mixed/.complete"
fi
du -sh "$mixed/Training/Huge" | awk '{print "20 huge JPEGs:", $1}'

weights=target/bench/mobilenetv2-seed0.safetensors
[ -f "$weights" ] || "${bins[0]}" weights init --model mobilenetv2 --seed 0 --out "$weights" > /dev/null

for bin in "${bins[@]}"; do
  for threads in 2 16; do
    for data in "$small" "$mixed"; do
      out=$(mktemp -d)
      /usr/bin/time -f "%M %e" -o target/bench/time.txt "$bin" featurize --input "$data" --output "$out/f" \
        --weights "$weights" --threads "$threads" --quiet 2> target/bench/stderr.txt || true
      read -r rss wall < target/bench/time.txt
      done_line=$(grep -o "featurised [0-9]* of [0-9]*" target/bench/stderr.txt || echo "failed")
      printf "%-28s threads %2d  %-24s %-26s peak RSS %5.0f MiB  wall %6.1f s\n" \
        "$bin" "$threads" "$(basename "$data")" "$done_line" "$((rss / 1024))" "$wall"
      rm -rf "$out"
    done
  done
done
