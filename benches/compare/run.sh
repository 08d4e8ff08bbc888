#!/usr/bin/env bash
# fruits vs ONNX Runtime, side by side, on the same 2,000 100x100 JPEGs, the
# same weights and the same 2 threads; runs alternate, median of RUNS.
#
#   benches/compare/run.sh [MODEL] [RUNS] [BATCH]
#
# Installs its own virtualenv (target/compare-venv: onnxruntime, timm, torch,
# pillow), exports the timm model to ONNX from the weights `fruits weights init`
# writes, and prints end-to-end images/s for both and their ratio, and the
# inference-only images/s of both (`fruits bench infer`: the model alone on
# in-memory images; ORT: the time inside session.run), with the CPU it ran on
# and its measured FMA peak (`fruits bench peak`) and fruits' share of it, so
# a figure says where it was made.
#
# FRUITS_BIN=PATH runs that binary instead of building target/release/fruits.
# Extra arguments go to `fruits featurize` and `fruits bench infer` (e.g. a
# different engine or dtype).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-mobilenetv2}
RUNS=${2:-3}
BATCH=${3:-32}
shift $(( $# > 3 ? 3 : $# ))
THREADS=$(nproc)
venv=target/compare-venv
if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import onnxruntime, timm, torch, PIL' 2>/dev/null; then
  python3 -m venv $venv
  $venv/bin/pip install --quiet -r benches/compare/requirements.txt
fi
if [ -z "${FRUITS_BIN:-}" ]; then
  cargo build --release --quiet
  FRUITS_BIN=$PWD/target/release/fruits
fi
# shellcheck source=benches/lib.sh
source benches/lib.sh
make_jpegs 2000 target/bench/jpegs-2000
mkdir -p target/compare
w=target/compare/$MODEL.safetensors
"$FRUITS_BIN" weights init --model "$MODEL" --seed 0 --out "$w" > /dev/null 2>&1
[ -f "target/compare/$MODEL.onnx" ] || $venv/bin/python benches/compare/ort_pipeline.py export "$MODEL" "$w" "target/compare/$MODEL.onnx"
fr=(); fn=(); ox=(); oi=(); sh=()
json() { $venv/bin/python -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 1))"; }
for ((r = 0; r < RUNS; r++)); do
  f=$("$FRUITS_BIN" featurize --input target/bench/jpegs-2000 --output target/compare/out --model "$MODEL" \
        --weights "$w" --batch "$BATCH" --quiet --overwrite "$@" 2>&1 | sed -n 's/.*(\([0-9.]*\) images\/s).*/\1/p')
  infer=$("$FRUITS_BIN" bench infer --model "$MODEL" --weights "$w" --batch "$BATCH" --images 2000 "$@" 2>/dev/null)
  i=$(echo "$infer" | sed -n 's/.*: \([0-9.]*\) images\/s.*/\1/p')
  # The share of the peak of the dtype that ran: bf16's where it did.
  share=$(echo "$infer" | sed -n 's/.*, \([0-9]*\)% of its bf16 peak.*/\1/p'); peak=bf16
  [ -n "$share" ] || { share=$(echo "$infer" | sed -n 's/.* = \([0-9]*\)% of this CPU.s f32 peak.*/\1/p'); peak=f32; }
  sh+=("$share")
  o=$($venv/bin/python benches/compare/ort_pipeline.py run "target/compare/$MODEL.onnx" target/bench/jpegs-2000 "$BATCH" "$THREADS")
  fr+=("$f"); fn+=("$i"); ox+=("$(echo "$o" | json e2e_images_per_s)"); oi+=("$(echo "$o" | json inference_images_per_s)")
  echo "run $r: end to end fruits ${fr[-1]}, onnxruntime ${ox[-1]} images/s; inference only fruits ${fn[-1]}, onnxruntime ${oi[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
F=$(median "${fr[@]}"); FI=$(median "${fn[@]}"); O=$(median "${ox[@]}"); I=$(median "${oi[@]}")
ratio() { echo "$1 / $2" | bc -l | cut -c1-4; }
"$FRUITS_BIN" bench peak --seconds 0.5 | sed 's/^/  /'
echo "$MODEL batch $BATCH, $THREADS threads, median of $RUNS${*:+ ($*)}:"
echo "  end to end:     fruits $F images/s, onnxruntime $O images/s, ratio $(ratio "$F" "$O")"
echo "  inference only: fruits $FI images/s ($(median "${sh[@]}")% of the $peak peak), onnxruntime $I images/s, ratio $(ratio "$FI" "$I")"
