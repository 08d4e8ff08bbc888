#!/usr/bin/env bash
# Spark's overhead: the PySpark driver (emr/fruits_emr/featurize_job.py) on a Spark
# standalone cluster on this machine (a master, two one-core workers) against
# the binary run directly with the same two cores, on the same N images.
#
#   benches/spark.sh [N]        (default 20000)
#
# Both featurise from local files with the same weights file and write parts;
# both then fit the PCA and reduce the features. Prints each side's wall time,
# images/s and the ratio. Needs .venv with pyspark (made by .ci/run) and Java.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
# shellcheck source=benches/lib.sh
source benches/lib.sh
cargo build --release --quiet
bin=$PWD/target/release/fruits
data=$PWD/target/bench/jpegs-$N
make_jpegs "$N" "$data"
weights=$PWD/target/bench/mobilenetv2-seed0.safetensors
[ -f "$weights" ] || "$bin" weights init --model mobilenetv2 --seed 0 --out "$weights" > /dev/null
work=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$work"' EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

# The binary alone: featurize, fit, transform, two cores.
t=$(now)
"$bin" featurize --input "$data" --output "$work/direct/features" --weights "$weights" --threads 2 --quiet 2> "$work/direct.log"
featurize_direct=$(since "$t")
"$bin" pca fit --features "$work/direct/features" --output "$work/direct/pca" --variance 0.95 2>> "$work/direct.log"
"$bin" pca transform --features "$work/direct/features" --model "$work/direct/pca" --output "$work/direct/reduced" 2>> "$work/direct.log"
total_direct=$(since "$t")

# The same on a Spark standalone cluster: 2 workers x 1 core, one binary per task.
export SPARK_HOME
SPARK_HOME=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$PWD/.venv/bin/python
port=7199
"$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port $port \
  --webui-port 8199 > "$work/master.log" 2>&1 &
until grep -q ALIVE "$work/master.log"; do sleep 0.5; done
for i in 1 2; do
  "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker --cores 1 --memory 2g \
    --work-dir "$work/w$i" --webui-port $((8199 + i)) spark://127.0.0.1:$port > "$work/worker$i.log" 2>&1 &
done
until [ "$(grep -c 'Registering worker' "$work/master.log")" -ge 2 ]; do sleep 0.5; done
t=$(now)
"$SPARK_HOME/bin/spark-submit" --master spark://127.0.0.1:$port --conf spark.ui.enabled=false \
  emr/fruits_emr/featurize_job.py --input "$data" --output "$work/spark" --weights "$weights" --fruits "$bin" \
  --stage-dir "file://$work/stage" --variance 0.95 > "$work/spark.log" 2>&1 || { tail -50 "$work/spark.log"; exit 1; }
total_spark=$(since "$t")
featurize_spark=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["stages"]["featurize_s"])' "$work/spark/run.json")

printf "%-34s %8s %10s\n" "" "wall s" "images/s"
printf "%-34s %8.1f %10.1f\n" "direct: featurize" "$featurize_direct" "$(echo "$N / $featurize_direct" | bc -l)"
printf "%-34s %8.1f %10.1f\n" "direct: featurize + PCA" "$total_direct" "$(echo "$N / $total_direct" | bc -l)"
printf "%-34s %8.1f %10.1f\n" "spark: featurize stage" "$featurize_spark" "$(echo "$N / $featurize_spark" | bc -l)"
printf "%-34s %8.1f %10.1f\n" "spark: spark-submit to the end" "$total_spark" "$(echo "$N / $total_spark" | bc -l)"
printf "ratio spark/direct: featurize %.2f, whole job %.2f\n" \
  "$(echo "$featurize_direct / $featurize_spark" | bc -l)" "$(echo "$total_direct / $total_spark" | bc -l)"
grep -E "^(run|stages|throughput|  )" "$work/spark.log" || true
