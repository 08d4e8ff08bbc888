#!/usr/bin/env bash
# fruits vs ONNX Runtime, side by side, on the same 2,000 100x100 JPEGs, the
# same weights and the same 2 threads; runs alternate, median of RUNS.
#
#   benches/compare/run.sh [MODEL] [RUNS] [BATCH]
#
# Installs its own virtualenv (target/compare-venv: onnxruntime, timm, torch,
# pillow), exports the timm model to ONNX from the weights `fruits weights init`
# writes, and prints end-to-end images/s for both and their ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-mobilenetv2}
RUNS=${2:-3}
BATCH=${3:-32}
THREADS=$(nproc)
venv=target/compare-venv
if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import onnxruntime, timm, torch, PIL' 2>/dev/null; then
  python3 -m venv $venv
  $venv/bin/pip install --quiet -r benches/compare/requirements.txt
fi
cargo build --release --quiet
[ -f target/bench/jpegs-2000/.complete ] || benches/featurize.sh 2000 "$MODEL" > /dev/null
mkdir -p target/compare
w=target/compare/$MODEL.safetensors
target/release/fruits weights init --model "$MODEL" --seed 0 --out "$w" > /dev/null 2>&1
[ -f target/compare/$MODEL.onnx ] || $venv/bin/python benches/compare/ort_pipeline.py export "$MODEL" "$w" target/compare/$MODEL.onnx
fr=(); ox=(); oi=()
for ((r = 0; r < RUNS; r++)); do
  f=$(target/release/fruits featurize --input target/bench/jpegs-2000 --output target/compare/out --model "$MODEL" \
        --weights "$w" --batch "$BATCH" --quiet 2>&1 | sed -n 's/.*(\([0-9.]*\) images\/s).*/\1/p')
  o=$($venv/bin/python benches/compare/ort_pipeline.py run target/compare/$MODEL.onnx target/bench/jpegs-2000 "$BATCH" "$THREADS")
  fr+=("$f"); ox+=("$(echo "$o" | $venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["e2e_images_per_s"])')")
  oi+=("$(echo "$o" | $venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["inference_images_per_s"])')")
  echo "run $r: fruits ${fr[-1]} images/s, onnxruntime ${ox[-1]} images/s end to end (${oi[-1]} inference only)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
F=$(median "${fr[@]}"); O=$(median "${ox[@]}"); I=$(median "${oi[@]}")
echo "$MODEL batch $BATCH, $THREADS threads, median of $RUNS: fruits $F images/s, onnxruntime $O images/s end to end ($I inference only); ratio $(echo "$F / $O" | bc -l | cut -c1-5)"
