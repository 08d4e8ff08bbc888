"""Cost per million images and cluster start-up against work, for
docs/REVIEW.md: every price from emr/fruits_emr/prices.json (dated, with its source),
every rate from a measurement or labelled as an estimate.

    python3 benches/cost.py [--cpu-rate IMAGES_PER_S_PER_VCPU] [--gpu-rate IMAGES_PER_S]
                            [--decode-rate IMAGES_PER_S_PER_VCPU] [--region eu-west-1]

--cpu-rate: the CPU engine, mobilenetv2, per vCPU, end to end (default: the
  table's images_per_s_per_vcpu, from benches/featurize.sh on this machine).
--decode-rate: decode+resize of Fruits-360's 100x100 JPEGs per vCPU (default:
  `fruits bench sweep`'s decode+resize line, 12,837/s on 2 threads here,
  benches/README.md).
--gpu-rate: what one T4 infers per second. NOT MEASURED: the default is the
  issue-11 target (3,000/s for mobilenetv2 in f16), an estimate.
A node featurises at the smallest of: its engine (CPU or GPU), its decode
(vCPUs x decode rate), and S3 (GETs in flight / latency).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "emr"))
from fruits_emr import prices  # noqa: E402  (the one price table)

S3_IN_FLIGHT = 64          # fruits' default --s3-concurrency
S3_LATENCY_S = 0.020       # first-byte latency of a small GET in-region (typical, not measured here)
MASTER = "m5.xlarge"


def node_rate(t, itype, a):
    inst = prices.instance(t, itype)
    engine = a.gpu_rate if inst["gpus"] else a.cpu_rate * inst["vcpu"]
    decode = a.decode_rate * inst["vcpu"]
    s3 = S3_IN_FLIGHT / S3_LATENCY_S
    bound = min((engine, "engine"), (decode, "decode"), (s3, "S3 GETs"))
    return bound


def per_million(t, region, itype, a, spot, shards=False):
    rate, bound = node_rate(t, itype, a)
    hours = 1e6 / rate / 3600
    node = prices.hourly(t, region, itype)
    if spot:
        off = t["spot_discount_assumed"]["fraction_off"]
        p = t["regions"][region][itype]
        node = p["ec2"] * (1 - off) + p["emr"]   # the EMR fee has no Spot discount
    s3 = t["s3_requests"][region]
    # Loose: one GET per image; one LIST page per 1,000 keys; ~4 PUTs per
    # part of 1,000 images (rows, errors, statistics, manifest). Shards: the
    # GETs benches/shards.sh counted per million photos (footers, names,
    # row groups, manifests), and the same PUTs.
    gets = a.shard_gets_per_million if shards else 1e6
    requests = gets / 1000 * s3["get_per_1000"] + (1e6 / 1000 / 1000) * s3["put_list_per_1000"] * 5
    return {"instance": itype, "spot": spot, "input": "shards" if shards else "loose", "images_per_s": rate,
            "bound": bound, "node_usd": node * hours, "s3_usd": requests, "total_usd": node * hours + requests}


def start_vs_work(t, region, itype, count, images, a):
    rate = node_rate(t, itype, a)[0] * count
    work = images / rate
    hourly = prices.cluster_hourly(t, region, MASTER, itype, count)
    start = t["cluster_start_s"]
    return {"instance": itype, "count": count, "images": images, "start_s": start, "work_s": work,
            "usd": hourly * (start + work) / 3600}


def main():
    t = prices.table()
    ap = argparse.ArgumentParser()
    ap.add_argument("--region", default="eu-west-1")
    ap.add_argument("--cpu-rate", type=float, default=t["images_per_s_per_vcpu"])
    ap.add_argument("--decode-rate", type=float, default=6400.0)
    ap.add_argument("--gpu-rate", type=float, default=3000.0)
    ap.add_argument("--shard-gets-per-million", type=float, default=1000.0,
                    help="GET requests to featurize a million photos from shards (benches/shards.sh measures it)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = [per_million(t, a.region, i, a, spot, shards) for shards in (False, True)
            for i in ("m5.xlarge", "c5.2xlarge", "g4dn.xlarge") for spot in (False, True)]
    starts = [start_vs_work(t, a.region, i, n, images, a) for i, n in (("c5.2xlarge", 3), ("g4dn.xlarge", 3))
              for images in (100_000, 100_000_000)]
    if a.json:
        print(json.dumps({"prices_as_of": t["as_of"], "per_million": rows, "start_vs_work": starts}, indent=1))
        return
    print(f"prices of {t['as_of']} (emr/fruits_emr/prices.json), {a.region}; CPU {a.cpu_rate:g}/s per vCPU (measured), "
          f"decode {a.decode_rate:g}/s per vCPU, T4 {a.gpu_rate:g}/s (ESTIMATE, not measured)")
    print(f"(shards: {a.shard_gets_per_million:g} GETs per million photos)")
    print("| input | node | price | images/s per node | bound by | node $ per 1M | S3 requests $ per 1M "
          "| total $ per 1M |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        est = " (est.)" if prices.instance(t, r["instance"])["gpus"] else ""
        print(f"| {r['input']} | {r['instance']} | {'Spot (assumed)' if r['spot'] else 'on-demand'} "
              f"| {r['images_per_s']:,.0f}{est} | {r['bound']} | {r['node_usd']:.3f} | {r['s3_usd']:.3f} "
              f"| {r['total_usd']:.4f} |")
    print()
    print(f"| cluster (1 x {MASTER} + core) | images | start-up | work | on-demand $ |")
    print("| --- | --- | --- | --- | --- |")
    for s in starts:
        print(f"| {s['count']} x {s['instance']} | {s['images']:,} | {s['start_s'] / 60:.0f} min (est.) "
              f"| {s['work_s'] / 60:,.1f} min | {s['usd']:.2f} |")


if __name__ == "__main__":
    main()
