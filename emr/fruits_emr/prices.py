"""The price table (prices.json, dated, with its source) and what a
cluster costs: every command that starts one prints this first."""

import json
import math

from . import files

PRICES = "emr/fruits_emr/prices.json"  # as the messages name it


def table(path: str = None) -> dict:
    with open(path or files.data("prices.json"), encoding="utf-8") as f:
        return json.load(f)


def instance(t: dict, itype: str) -> dict:
    if itype not in t["instances"]:
        raise KeyError(f"no instance type {itype} in {PRICES} (known: {', '.join(t['instances'])})")
    return t["instances"][itype]


def hourly(t: dict, region: str, itype: str) -> float:
    """EC2 + EMR per hour for one instance, on demand."""
    try:
        p = t["regions"][region][itype]
    except KeyError:
        raise KeyError(f"no price for {itype} in {region} in {PRICES}") from None
    return p["ec2"] + p["emr"]


def cluster_hourly(t: dict, region: str, master: str, core: str, count: int) -> float:
    return hourly(t, region, master) + count * hourly(t, region, core)


# A task's work, in seconds at its node's rate: against the ~0.5 s to start
# a binary and load the model, and ~1 s of NVRTC compilation on a GPU
# (issue 23), minutes of work leave them a percent or two; a retried task
# loses no more.
TASK_SECONDS = 120


def node_rate(t: dict, core: str) -> float:
    """Images/s one core node featurises (the table's throughput_note)."""
    return t["images_per_s_per_vcpu"] * instance(t, core)["vcpu"]


def images_per_task(t: dict, core: str, seconds: float = TASK_SECONDS) -> int:
    """The driver's --images-per-partition for `core` nodes (one task a node
    at a time): `seconds` of work, in thousands, at least 2,000; on a GPU
    node at the table's upper estimate of a GPU's rate (too high an
    estimate makes tasks longer, never too short for the fixed costs)."""
    rate = node_rate(t, core)
    if instance(t, core)["gpus"]:
        rate = max(rate, t["gpu_images_per_s_upper_estimate"] * instance(t, core)["gpus"])
    return max(2000, int(round(rate * seconds, -3)))


def estimate(t: dict, region: str, master: str, core: str, count: int, images: int = 0) -> dict:
    """Hourly cost, and for `images` the expected run time and cost (cluster
    start included; per-second billing, one minute minimum)."""
    per_hour = cluster_hourly(t, region, master, core, count)
    rate = node_rate(t, core) * count
    seconds = t["cluster_start_s"] + (images / rate if images else 0)
    return {
        "per_hour_usd": round(per_hour, 3),
        "run_seconds": math.ceil(seconds),
        "run_usd": round(per_hour * max(seconds, 60) / 3600, 3),
        "as_of": t["as_of"],
    }


def describe(e: dict, master: str, core: str, count: int, region: str, images: int = 0) -> str:
    line = (f"estimated cost: ${e['per_hour_usd']:.2f}/hour for 1 x {master} + {count} x {core} in {region} "
            f"(on-demand prices of {e['as_of']}, {PRICES})")
    if images:
        line += (f"; {images} images: ~{e['run_seconds'] / 60:.0f} min including ~"
                 f"{table()['cluster_start_s'] / 60:.0f} min of cluster start, ~${e['run_usd']:.2f}")
    return line
