"""The command line of fruits-emr: argparse in, one typed parameters object
per command out (`commands.*Args`); the commands never see argparse."""

import argparse
import os
import sys

from . import artifacts, cluster, commands, files, regions, tls
from .aws import Aws


def parser() -> argparse.ArgumentParser:
    # Options every command takes, before or after its name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--region", default=argparse.SUPPRESS,
                        help="AWS region (European only; default $AWS_REGION or the binary's default, eu-west-1)")
    common.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                        help="print the exact AWS requests, send none")
    common.add_argument("--binary", default=argparse.SUPPRESS,
                        help="the fruits binary: the nodes install it, and its `fruits regions` is the list of "
                        "regions allowed (default $FRUITS_BIN, a clone's target/release/fruits, or fruits on PATH)")
    p = argparse.ArgumentParser(
        prog="fruits-emr", parents=[common],
        description="Run fruits on Amazon EMR in Europe: infrastructure, transient and demo clusters, "
        "their cost. See docs/EMR.md.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("deploy", parents=[common],
                       help="once: the bucket, VPC and roles (CloudFormation, emr/fruits_emr/infra.yaml)")
    d.add_argument("--bucket", required=True)
    keep = commands.Retention()
    d.add_argument("--photo-days", type=int, default=keep.photos,
                   help="days photos are kept under photos/ (default %(default)s)")
    d.add_argument("--run-days", type=int, default=keep.runs,
                   help="days a run's results are kept under runs/ (default %(default)s)")
    d.add_argument("--run-version-days", type=int, default=keep.run_versions,
                   help="days an overwritten or deleted result stays recoverable (default %(default)s)")
    d.add_argument("--log-days", type=int, default=keep.logs,
                   help="days EMR's and the bucket's access logs are kept (default %(default)s)")
    d.add_argument("--rotate-tls", action="store_true",
                   help="replace the in-transit TLS certificate in the bucket now (deploy otherwise makes one "
                   "only when there is none or it expires within 30 days); refused while a cluster is up")

    def nodes(s, bucket_required=True):
        s.add_argument("--bucket", required=bucket_required,
                       help="the bucket `deploy` made" + ("" if bucket_required else " (default: --output's)"))
        s.add_argument("--master-type", default=cluster.Shape.master_type)
        s.add_argument("--core-type", default=cluster.Shape.core_type)
        s.add_argument("--core-count", type=int, default=cluster.Shape.core_count)
        s.add_argument("--spot", action="store_true", help="core nodes on Spot (cheaper, may be reclaimed)")
        s.add_argument("--idle-timeout", type=int, default=cluster.DEFAULT_IDLE_TIMEOUT_S // 60,
                       help="minutes idle before the cluster terminates itself (default %(default)s)")
        s.add_argument("--cuda-wheels", default=None, metavar="DIR",
                       help="the cuBLAS and NVRTC wheels GPU nodes install, fetched once by "
                       "emr/fetch_cuda_wheels.sh (default $FRUITS_CUDA_WHEELS or ~/.cache/fruits/cuda-wheels)")
        s.add_argument("--model", default="mobilenetv2")
        s.add_argument("--weights", help="s3://... safetensors, or random:SEED; default: the pinned hub file, "
                       "fetched on this machine (the nodes have no Internet) and put in the bucket once")

    r = sub.add_parser("run", parents=[common], help="a transient cluster: the job as its step, then it terminates")
    nodes(r, bucket_required=False)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="s3://BUCKET/photos/... folder")
    src.add_argument("--keys", help="s3://BUCKET/... key list")
    src.add_argument("--shards", help="s3://BUCKET/photos/... folder of shards (fruits pack): whole shards a task")
    r.add_argument("--output", required=True, help="s3://BUCKET/runs/NAME/")
    r.add_argument("--images", type=int, help="how many images, for the time and cost estimate")
    r.add_argument("--resume", action="store_true", help="skip parts already complete")
    r.add_argument("--no-wait", action="store_true", help="return once the cluster is starting")

    u = sub.add_parser("up", parents=[common], help="an interactive cluster (terminates itself when idle)")
    nodes(u)

    s = sub.add_parser("status", parents=[common],
                       help="the clusters up now tagged project=fruits, their age and cost")
    s.add_argument("--warn-hours", type=float, default=2.0)

    dn = sub.add_parser("down", parents=[common],
                        help="terminate a cluster (default: every cluster up tagged project=fruits)")
    dn.add_argument("--cluster-id")

    dm = sub.add_parser("demo", parents=[common],
                        help="up, run on the sample photos, show results, down (on every exit: Ctrl-C, "
                        "SIGTERM, SIGHUP too)")
    nodes(dm)
    dm.add_argument("--step-timeout", type=float, default=3600, help="seconds to wait for the job")

    rp = sub.add_parser("report", parents=[common], help="print a run's run.json")
    rp.add_argument("--output", required=True)
    return p


def nodes_of(a, binary: str, bucket: str) -> commands.Nodes:
    return commands.Nodes(
        bucket=bucket, binary=binary, model=a.model, weights=a.weights, cuda_wheels=a.cuda_wheels,
        idle_timeout_s=a.idle_timeout * 60,
        shape=cluster.Shape(master_type=a.master_type, core_type=a.core_type, core_count=a.core_count,
                            spot=a.spot))


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    binary = getattr(a, "binary", None) or files.default_binary()
    try:
        europe = regions.of_binary(binary)
        region = getattr(a, "region", None) or os.environ.get("AWS_REGION") or europe.default
        # Refuses a region outside Europe before anything else.
        aws = Aws(region, europe, dry_run=getattr(a, "dry_run", False))
        if a.command == "deploy":
            commands.deploy(aws, a.bucket, commands.Retention(photos=a.photo_days, runs=a.run_days,
                                                              run_versions=a.run_version_days, logs=a.log_days),
                            rotate_tls=a.rotate_tls)
        elif a.command == "run":
            job = commands.Job(input=a.input, keys=a.keys, shards=a.shards, output=a.output, resume=a.resume)
            bucket = a.bucket or commands.bucket_of(a.output)
            commands.run(aws, commands.RunArgs(nodes=nodes_of(a, binary, bucket), job=job, images=a.images or 0,
                                               wait=not a.no_wait))
        elif a.command == "up":
            commands.up(aws, nodes_of(a, binary, a.bucket))
        elif a.command == "status":
            commands.status(aws, warn_hours=a.warn_hours)
        elif a.command == "down":
            commands.down(aws, cluster_id=a.cluster_id)
        elif a.command == "demo":
            commands.demo(aws, nodes_of(a, binary, a.bucket), step_timeout_s=a.step_timeout)
        elif a.command == "report":
            commands.report(aws, a.output)
    except (regions.RegionRefused, commands.Failed, artifacts.Unusable, tls.Unmade, FileNotFoundError,
            KeyError) as e:
        print(f"fruits-emr: error: {e}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The installed `fruits-emr` command."""
    sys.exit(main())
