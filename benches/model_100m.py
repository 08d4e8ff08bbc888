"""A 100M-photo run on paper (issue 23): the wall time and cost of a cluster
run of PHOTOS photos on N core nodes, stage by stage as the driver runs them
(emr/fruits_emr/featurize_job.py), from measured inputs and the price table,
and what bounds it.

    python3 benches/model_100m.py [--photos 100000000] [--task-fixed-s S] [--list-rate KEYS_PER_S]
                                  [--merge-mb-per-s MB_PER_S] [--cpu-rate R] [--gpu-rate R] [--json]

Inputs, each with where it comes from (benches/README.md gives the commands
and the runs):
- node rates: benches/cost.py's (CPU: the table's measured images/s per vCPU,
  bound by decode and S3 GETs in flight). GPU nodes (g4dn, a T4) are modelled
  only with --gpu-rate, a T4's images/s measured by `fruits bench` on one:
  none has been measured (the project's GPU runs were on an H200), and an
  estimate is not a measured input;
- --task-fixed-s: a task's fixed cost, `benches/task_overhead.sh` (CPU; a
  GPU adds NVRTC's compilation at every model load, not measured here);
- --list-rate: keys/s one `fruits list` paginator lists through +20 ms a
  request, `benches/listing.sh` (the driver runs one per task slot);
- --merge-mb-per-s: statistics bytes/s one `fruits pca merge` reads and adds,
  `benches/pca_merge.sh`; each file also pays S3's first-byte latency (20 ms);
- S3 request prices and the instances' prices: emr/fruits_emr/prices.json;
- GETs per million photos from shards: `benches/shards.sh`.
Left out: cluster start-up is the table's estimate (8 min, not measured),
`pca transform` (a second pass over the features parts, reading 5 KB a
photo: about 1/20 of the featurize stage's bytes, and no inference).
"""

import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "emr"))
sys.path.insert(0, HERE)
import cost  # noqa: E402  (the node rates, the S3 latency)
from fruits_emr import featurize_job as job  # noqa: E402  (the driver's constants)
from fruits_emr import prices  # noqa: E402  (the one price table)

STATS_BYTES = 6_562_984  # one part's statistics file at 1,280 features (`ls -l` of a part's, mobilenetv2)
MASTER = "m5.xlarge"


def merge_levels(parts, fan_in):
    """Merge tasks per level of the driver's tree, and the files left for the fit."""
    levels, n = [], parts
    while not levels or n > fan_in:
        n = math.ceil(n / fan_in)
        levels.append(n)
    return levels, n


def model(t, a, node, count, shards):
    rate, bound = cost.node_rate(t, node, a)
    per_task = prices.images_per_task(t, node)
    tasks = math.ceil(a.photos / per_task)
    # One task a node at a time (one executor a node, all its cores to the binary).
    featurize = math.ceil(tasks / count) * (a.task_fixed_s + per_task / rate)
    fixed_share = a.task_fixed_s / (a.task_fixed_s + per_task / rate)
    listing = 0.0 if shards else a.photos / (a.list_rate * count)
    file_s = cost.S3_LATENCY_S + STATS_BYTES / (a.merge_mb_per_s * 1e6)
    levels, left = merge_levels(tasks, job.MERGE_FAN_IN)
    below = [tasks] + levels[:-1]
    merge = sum(math.ceil(g / count) * (a.task_fixed_s + min(job.MERGE_FAN_IN, n) * file_s)
                for g, n in zip(levels, below, strict=True))
    fit = left * file_s
    stages = {"listing": listing, "featurize": featurize, "pca merge": merge, "pca fit (driver)": fit}
    wall = sum(stages.values())
    s3 = t["s3_requests"][a.region]
    gets = a.photos / 1e6 * (a.shard_gets_per_million if shards else 1e6)
    puts = tasks * 4 + (0 if shards else a.photos / 1000 + job.LISTING_SLICES_PER_SLOT * count)
    s3_usd = gets / 1000 * s3["get_per_1000"] + puts / 1000 * s3["put_list_per_1000"]
    hourly = prices.cluster_hourly(t, a.region, MASTER, node, count)
    node_usd = hourly * (t["cluster_start_s"] + wall) / 3600
    slowest = max(stages, key=stages.get)
    return {"node": node, "count": count, "input": "shards" if shards else "loose", "images_per_s_node": rate,
            "node_bound": bound, "per_task": per_task, "tasks": tasks, "fixed_share": fixed_share,
            "merge_levels": levels, "files_fitted": left, "stages_s": stages, "wall_s": wall,
            "bound": f"{slowest} ({bound})" if slowest == "featurize" else slowest,
            "cluster_usd": node_usd, "s3_usd": s3_usd, "total_usd": node_usd + s3_usd}


def main():
    t = prices.table()
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=float, default=100e6)
    ap.add_argument("--region", default="eu-west-1")
    ap.add_argument("--task-fixed-s", type=float, default=0.075,
                    help="benches/task_overhead.sh 400: 0.075 s (CPU, 2026-12-05)")
    ap.add_argument("--list-rate", type=float, default=3546.0,
                    help="keys/s of one `fruits list` through +20 ms a request: 3,546 from moto (benches/listing.sh "
                         "before it moved to s3s-fs, 1,409 there; both servers bound by their own CPU here)")
    ap.add_argument("--merge-mb-per-s", type=float, default=373.0,
                    help="benches/pca_merge.sh 5000 256 64: 1,339 MB in 81 merges, 3.59 s (2026-12-05)")
    ap.add_argument("--cpu-rate", type=float, default=t["images_per_s_per_vcpu"])
    ap.add_argument("--decode-rate", type=float, default=6400.0)
    ap.add_argument("--gpu-rate", type=float, default=None,
                    help="a T4's images/s, measured (`fruits bench` on a g4dn.xlarge); without it no GPU row")
    ap.add_argument("--shard-gets-per-million", type=float, default=1000.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    nodes = ("c5.2xlarge",) + (("g4dn.xlarge",) if a.gpu_rate else ())
    rows = [model(t, a, node, count, shards) for shards in (False, True) for node in nodes for count in (3, 10, 30)]
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{a.photos:,.0f} photos, {a.region}, prices of {t['as_of']}; task fixed cost {a.task_fixed_s} s, "
          f"listing {a.list_rate:,.0f} keys/s a paginator, merge {a.merge_mb_per_s} MB/s + "
          f"{cost.S3_LATENCY_S * 1000:.0f} ms a file; "
          + (f"T4 {a.gpu_rate:,.0f}/s (--gpu-rate)" if a.gpu_rate else
             "no GPU rows: no T4 rate measured (pass --gpu-rate from `fruits bench` on a g4dn.xlarge)"))
    print("| input | nodes | photos a task (tasks) | fixed share | listing | featurize | merge (tasks per level) | fit "
          "| wall | bound by | cluster $ | S3 $ | total $ |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        s = r["stages_s"]
        print(f"| {r['input']} | {r['count']} x {r['node']} | {r['per_task']:,} ({r['tasks']:,}) "
              f"| {r['fixed_share']:.2%} | {s['listing'] / 60:.1f} min | {s['featurize'] / 3600:.1f} h "
              f"| {s['pca merge']:.0f} s ({'+'.join(map(str, r['merge_levels']))}) | {s['pca fit (driver)']:.1f} s "
              f"| {r['wall_s'] / 3600:.1f} h | {r['bound']} | {r['cluster_usd']:.0f} | {r['s3_usd']:.0f} "
              f"| {r['total_usd']:.0f} |")
    print(f"(cluster $: 1 x {MASTER} + the core nodes, on demand, from start-up, {t['cluster_start_s'] / 60:.0f} min "
          "estimated, to the fit; the driver's memory is flat in the photos: benches/driver_plan.sh)")


if __name__ == "__main__":
    main()
