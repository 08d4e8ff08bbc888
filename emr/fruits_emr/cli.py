"""The command line of fruits-emr."""

import argparse
import os
import sys

from . import cluster, commands, regions
from .aws import Aws

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fruits-emr",
        description="Run fruits on Amazon EMR in Europe: infrastructure, transient and demo clusters, "
        "their cost. See docs/EMR.md.")
    p.add_argument("--region", default=os.environ.get("AWS_REGION") or regions.default_region(),
                   help="AWS region (European only; default $AWS_REGION or %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the exact AWS requests, send none")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("deploy", help="once: the bucket, VPC and roles (CloudFormation, emr/infra.yaml)")
    d.add_argument("--bucket", required=True)

    def shape(s, bucket_required=True):
        s.add_argument("--bucket", required=bucket_required,
                       help="the bucket `deploy` made" + ("" if bucket_required else " (default: --output's)"))
        s.add_argument("--master-type", default=cluster.Shape.master_type)
        s.add_argument("--core-type", default=cluster.Shape.core_type)
        s.add_argument("--core-count", type=int, default=cluster.Shape.core_count)
        s.add_argument("--spot", action="store_true", help="core nodes on Spot (cheaper, may be reclaimed)")
        s.add_argument("--idle-timeout", type=int, default=cluster.DEFAULT_IDLE_TIMEOUT_S // 60,
                       help="minutes idle before the cluster terminates itself (default %(default)s)")
        s.add_argument("--binary", default=os.path.join(REPO, "target", "release", "fruits"),
                       help="the fruits binary the nodes install (default %(default)s)")
        s.add_argument("--cuda-wheels", default=None, metavar="DIR",
                       help="the cuBLAS and NVRTC wheels GPU nodes install, fetched once by "
                       "emr/fetch_cuda_wheels.sh (default $FRUITS_CUDA_WHEELS or ~/.cache/fruits/cuda-wheels)")
        s.add_argument("--model", default="mobilenetv2")
        s.add_argument("--weights", help="s3://... safetensors, or random:SEED; default: the pinned hub file")

    r = sub.add_parser("run", help="a transient cluster: the job as its step, then it terminates")
    shape(r, bucket_required=False)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="s3://BUCKET/photos/... folder")
    src.add_argument("--keys", help="s3://BUCKET/... key list")
    r.add_argument("--output", required=True, help="s3://BUCKET/runs/NAME/")
    r.add_argument("--images", type=int, help="how many images, for the time and cost estimate")
    r.add_argument("--resume", action="store_true", help="skip parts already complete")
    r.add_argument("--no-wait", action="store_true", help="return once the cluster is starting")

    u = sub.add_parser("up", help="an interactive cluster (terminates itself when idle)")
    shape(u)

    s = sub.add_parser("status", help="the fruits clusters up now, their age and cost")
    s.add_argument("--warn-hours", type=float, default=2.0)

    dn = sub.add_parser("down", help="terminate a cluster (default: every fruits cluster up)")
    dn.add_argument("--cluster-id")

    dm = sub.add_parser("demo", help="up, run on the sample photos, show results, down (also on Ctrl-C)")
    shape(dm)
    dm.add_argument("--step-timeout", type=float, default=3600, help="seconds to wait for the job")

    rp = sub.add_parser("report", help="print a run's run.json")
    rp.add_argument("--output", required=True)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        aws = Aws(args.region, dry_run=args.dry_run)  # refuses a region outside Europe, first
        if args.command == "deploy":
            commands.deploy(aws, args.bucket, regions.european_regions())
        elif args.command == "run":
            args.bucket = args.bucket or commands.bucket_of(args.output)
            commands.run(aws, args)
        elif args.command == "up":
            commands.up(aws, args)
        elif args.command == "status":
            commands.status(aws, args)
        elif args.command == "down":
            commands.down(aws, args)
        elif args.command == "demo":
            commands.demo(aws, args)
        elif args.command == "report":
            commands.report(aws, args.output)
    except (regions.RegionRefused, commands.Failed, FileNotFoundError, KeyError) as e:
        print(f"fruits-emr: error: {e}", file=sys.stderr)
        return 1
    return 0
