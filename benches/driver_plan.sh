#!/usr/bin/env bash
# The PySpark driver's planning (issue 23): the key list read, cut into
# partitions and handed to Spark (local mode), by today's driver and by the
# one before it (from git, OLD_REV), on N synthetic keys (no photos).
#
#   benches/driver_plan.sh [OLD_REV] [OLD_SIZES] [NEW_SIZES]
#       (defaults: ff2a94b, "250000 1000000", "1000000 10000000 100000000")
#
# Both drivers cut the keys into tasks of PER_TASK photos (default 192,000,
# fruits-emr's for a c5.2xlarge). Prints a table: keys, partitions, planning seconds, the Python driver's and
# the driver JVM's peak RSS, for each driver and size. The key lists
# (s3://bench/photos/Training/Apple/NNNNNNNNN.jpg, 47 bytes a line) are made
# once under target/bench/keys-N.txt (100M keys: 4.7 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=${1:-ff2a94b}
OLD_SIZES=${2:-250000 1000000}
NEW_SIZES=${3:-1000000 10000000 100000000}
py=$PWD/.venv/bin/python
cargo build --release --quiet
bin=$PWD/target/release/fruits
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$py
mkdir -p target/bench
old=target/bench/featurize_job-$OLD_REV.py
git show "$OLD_REV:emr/fruits_emr/featurize_job.py" > "$old"
keys() { # N: the key list's path, made once
  local f=target/bench/keys-$1.txt
  if [ ! -f "$f.complete" ]; then
    seq -f 's3://bench/photos/Training/Apple/%09.0f.jpg' 0 $(($1 - 1)) > "$f"
    touch "$f.complete"
  fi
  echo "$PWD/$f"
}
echo "| driver | keys | photos a task | partitions | planning s | Python peak MiB | JVM peak MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
measure() { # DRIVER N
  local line
  line=$($py benches/driver_plan.py "$1" "$2" "$(keys "$2")" "$bin" "$PWD/$old" 2> target/bench/driver_plan.log | tail -1)
  $py -c 'import json, sys
r = json.loads(sys.argv[1])
print("| {driver} | {keys:,} | {per_task:,} | {partitions:,} | {plan_s} | {python_peak_mib} | {jvm_peak_mib} |".format(**r))' "$line"
}
for n in $OLD_SIZES; do measure old "$n"; done
for n in $NEW_SIZES; do measure new "$n"; done
