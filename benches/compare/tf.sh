#!/usr/bin/env bash
# fruits vs the notebook's stack (Keras MobileNetV2 on TensorFlow CPU, fed by
# PIL; Spark left out, so this is the stack's best case), side by side on the
# same 2,000 100x100 JPEGs, 2 threads each, batch 32; runs alternate, median
# of RUNS. Spark cost the notebook more: its author measured 31 images/s on
# 2 cores.
#
#   benches/compare/tf.sh [RUNS] [BATCH]
#
# Installs its own virtualenv (target/tf-venv: tensorflow-cpu, pillow).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
BATCH=${2:-32}
THREADS=$(nproc)
venv=target/tf-venv
if [ ! -x $venv/bin/python ] || ! $venv/bin/python -c 'import tensorflow, PIL' 2> /dev/null; then
  python3 -m venv $venv
  $venv/bin/pip install --quiet -r benches/compare/requirements-tf.txt
fi
# shellcheck source=benches/lib.sh
source benches/lib.sh
data=target/bench/jpegs-2000
make_jpegs 2000 "$data"
bin=${FRUITS:-target/release/fruits}
[ -n "${FRUITS:-}" ] || cargo build --release --quiet
fr=(); tx=(); ti=()
json() { $venv/bin/python -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 1))"; }
for ((r = 0; r < RUNS; r++)); do
  f=$("$bin" featurize --input "$data" --output target/compare/tf-out --weights random:0 --batch "$BATCH" \
        --overwrite --quiet 2>&1 | sed -n 's/.*(\([0-9.]*\) images\/s).*/\1/p')
  o=$($venv/bin/python benches/compare/tf_pipeline.py "$data" "$BATCH" "$THREADS")
  fr+=("$f"); tx+=("$(echo "$o" | json e2e_images_per_s)"); ti+=("$(echo "$o" | json inference_images_per_s)")
  echo "run $r: end to end fruits ${fr[-1]}, tensorflow ${tx[-1]} images/s (tensorflow inference only ${ti[-1]})"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
F=$(median "${fr[@]}"); T=$(median "${tx[@]}"); I=$(median "${ti[@]}")
echo "mobilenetv2 batch $BATCH, $THREADS threads, median of $RUNS:"
echo "  end to end: fruits $F images/s, tensorflow + PIL $T images/s, ratio $(echo "$F / $T" | bc -l | cut -c1-4)"
echo "  tensorflow inference only: $I images/s"
