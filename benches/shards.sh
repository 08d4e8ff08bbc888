#!/usr/bin/env bash
# Loose photos against shards, from a local S3-compatible server (moto) behind
# a proxy that adds a fixed latency to every request (what an S3 round trip
# costs from EMR) and records each request; then a daily run: 10% more
# photos, featurize --append against a run from scratch. Same photos, same
# binary, same run (issue 22).
#
#   benches/shards.sh [N] [DELAY_MS]     (default 2000 100x100 JPEGs, 20 ms)
#
# Reports, for loose photos and for shards: the requests featurize sent
# (GET objects, LIST pages, other), scaled to a million photos, and images/s;
# then the daily run's time and requests against the run from scratch, and
# whether both folders hold the same rows.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
DELAY=${2:-20}
py=.venv/bin/python
cargo build --release --quiet
bin=target/release/fruits
# shellcheck source=benches/lib.sh
source benches/lib.sh
work=target/bench/shards
rm -rf "$work"
mkdir -p "$work"
data=target/bench/jpegs-$N
make_jpegs "$N" "$data"
more=$((N / 10))
extra=target/bench/jpegs-extra-$more
make_jpegs "$more" "$extra"

exec 3< <($py tests/s3_helper.py serve 2>/dev/null)
read -r _ port <&3
trap '{ kill $(jobs -p); pkill -f "s3_helper.py (serve|proxy)"; } 2> /dev/null || true' EXIT
ep=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
$py tests/s3_helper.py bucket "$ep" bench-photos eu-west-1
$py tests/s3_helper.py upload "$ep" "$data" bench-photos photos/
record=$work/requests.jsonl
exec 4< <($py tests/s3_helper.py proxy "$port" --delay-ms "$DELAY" --record "$record" 2>/dev/null)
read -r _ slow <&4
slow=http://127.0.0.1:$slow

# count: GET objects, LIST pages, other requests recorded since line $1.
count() {
  tail -n +"$(($1 + 1))" "$record" | $py -c '
import json, sys
gets = lists = other = 0
for line in sys.stdin:
    r = json.loads(line)
    if r["method"] == "GET" and "list-type" in r["path"]:
        lists += 1
    elif r["method"] == "GET" and "location" not in r["path"]:
        gets += 1
    else:
        other += 1
print(gets, lists, other)'
}
lines() { [ -f "$record" ] && wc -l < "$record" || echo 0; }

# featurize NAME INPUT [FLAGS...]: through the slow proxy into $work/NAME;
# prints "seconds gets lists other rows".
featurize() {
  local name=$1 input=$2
  shift 2
  local before t0 t1
  before=$(lines)
  t0=$(date +%s.%N)
  $bin --s3-endpoint "$slow" featurize --input "$input" --output "$work/$name" --weights random:0 --quiet \
    --device cpu "$@" 2> "$work/$name.txt"
  t1=$(date +%s.%N)
  local rows
  rows=$(grep -oE 'featurised [0-9]+ of [0-9]+' "$work/$name.txt" | awk '{s += $2} END {print s + 0}')
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') $(count "$before") $rows"
}

echo "== pack $N photos into shards (direct, not timed)"
$bin --s3-endpoint "$ep" pack --input s3://bench-photos/photos/ --output s3://bench-photos/shards/ 2>&1 | tail -1

echo "== featurize through +$DELAY ms per request: loose photos, then shards"
read -r ls lg ll lo lrows <<< "$(featurize loose s3://bench-photos/photos/)"
read -r ss sg sl so srows <<< "$(featurize shards s3://bench-photos/shards/)"
per_m() { awk -v n="$1" -v r="$2" 'BEGIN {printf "%.0f", n * 1e6 / r}'; }
echo "| input | photos | GET objects | LIST pages | other | requests per million photos | seconds | images/s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for row in "loose $lrows $lg $ll $lo $ls" "shards $srows $sg $sl $so $ss"; do
  read -r what rows g l o s <<< "$row"
  echo "| $what | $rows | $g | $l | $o | $(per_m $((g + l + o)) "$rows") | $s | $(awk -v r="$rows" -v s="$s" 'BEGIN {printf "%.1f", r / s}') |"
done
echo "shards / loose: $(awk -v a=$((sg + sl + so)) -v b=$((lg + ll + lo)) 'BEGIN {printf "%.4f", a / b}') x the requests," \
  "$(awk -v a="$ss" -v b="$ls" 'BEGIN {printf "%.2f", b / a}') x the throughput"

echo "== a day later: $more new photos ($((100 * more / N))%); --append against a run from scratch"
$py tests/s3_helper.py upload "$ep" "$extra" bench-photos photos/new/
read -r as ag al ao arows <<< "$(featurize loose s3://bench-photos/photos/ --append)"
read -r fs fg fl fo frows <<< "$(featurize scratch s3://bench-photos/photos/)"
# The fixed cost of a run (start, weights, listing, reading what the parts
# hold): --append again, with nothing new.
read -r ns ng nl no _ <<< "$(featurize loose s3://bench-photos/photos/ --append)"
echo "| run | photos featurised | seconds | GET objects | LIST pages | other |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| --append | $arows | $as | $ag | $al | $ao |"
echo "| from scratch | $frows | $fs | $fg | $fl | $fo |"
echo "| --append, nothing new | 0 | $ns | $ng | $nl | $no |"
echo "--append / from scratch: $(awk -v a="$as" -v b="$fs" 'BEGIN {printf "%.3f", a / b}') x the time," \
  "$(awk -v a=$((ag + al + ao)) -v b=$((fg + fl + fo)) 'BEGIN {printf "%.3f", a / b}') x the requests;" \
  "less the fixed cost of a run ($ns s): $(awk -v a="$as" -v b="$fs" -v f="$ns" 'BEGIN {printf "%.3f", (a - f) / (b - f)}') x the time"
$py - "$work/loose" "$work/scratch" <<'EOF'
import glob, sys
import pyarrow.parquet as pq
def rows(folder):
    out = {}
    for f in sorted(glob.glob(folder + "/part-*.parquet")):
        t = pq.read_table(f, columns=["path", "features"])
        out.update(zip(t.column("path").to_pylist(), t.column("features").to_pylist()))
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
print(f"same rows as from scratch: {a == b} ({len(a)} and {len(b)} photos)")
EOF

echo "== what each folder gives downstream: PCA spectrum and index answers (the same PCA, to compare indexes)"
# The queries: the sample photos (also in the data, each under other names).
mapfile -t queries < <(find tests/data/fruits-360-sample -name '*.jpg' | sort)
for f in loose scratch; do
  $bin pca fit --features "$work/$f" --output "$work/$f-pca" --k 16 2> /dev/null
done
for f in loose scratch; do
  $bin index build --features "$work/$f" --pca "$work/scratch-pca" --output "$work/$f-index" > /dev/null 2>&1 ||
    $bin index build --features "$work/$f" --pca "$work/scratch-pca" --output "$work/$f-index"
  $bin identify --index "$work/$f-index" --weights random:0 --device cpu --json "${queries[@]}" > "$work/$f-answers.json"
done
$py - "$work" <<'EOF2'
import json, sys
import pyarrow.parquet as pq
work = sys.argv[1]
def spectrum(f):
    return pq.read_table(f"{work}/{f}-pca/spectrum.parquet").to_pydict()
def answers(f):
    # The answer only: timings differ from run to run.
    return [{k: v for k, v in a.items() if "ms" not in k and "time" not in k} for a in json.load(open(f"{work}/{f}-answers.json"))]
# Statistics merged from other parts sum in another order: equal to
# rounding, not bit for bit.
sa, sb = spectrum("loose"), spectrum("scratch")
# Relative to each column's largest value: the trailing eigenvalues are ~0.
gap = max(abs(x - y) / max(max(abs(v) for v in sb[c]), 1e-300)
          for c in sb if c != "component" for x, y in zip(sa[c], sb[c], strict=True))
a, b = answers("loose"), answers("scratch")
print(f"PCA spectrum: largest relative difference from scratch {gap:.1e}; same index answers: {a == b} ({len(a)} photos)")
EOF2
