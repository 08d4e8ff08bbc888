"""The commands: deploy, run, up, status, down, demo, report. Each reads as
its steps; every AWS request goes through `Aws.call` (dry-run, region)."""

import datetime
import json
import os
import signal
import threading
import time

from . import artifacts, cluster, prices

EMR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(EMR)
TEMPLATE = os.path.join(EMR, "infra.yaml")
SAMPLE = os.path.join(REPO, "tests", "data", "fruits-360-sample")
ACTIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
ENDED = ("TERMINATED", "TERMINATED_WITH_ERRORS")


class Failed(Exception):
    """A command could not do its job; the message says why."""


def say(msg: str) -> None:
    print(f"fruits-emr: {msg}", flush=True)


def poll_seconds() -> float:
    return float(os.environ.get("FRUITS_EMR_POLL_S", "30"))


def stack_name(bucket: str) -> str:
    return f"fruits-{bucket}".replace(".", "-")


# deploy -------------------------------------------------------------------
def deploy(aws, bucket: str, european: list) -> None:
    """Creates (or updates) the stack of emr/infra.yaml: bucket, VPC, roles."""
    with open(TEMPLATE, encoding="utf-8") as f:
        body = f.read()
    params = [
        {"ParameterKey": "BucketName", "ParameterValue": bucket},
        {"ParameterKey": "EuropeanRegions", "ParameterValue": ",".join(european)},
    ]
    name = stack_name(bucket)
    exists = not aws.dry_run and _stack(aws, name) is not None
    op = "UpdateStack" if exists else "CreateStack"
    request = dict(StackName=name, TemplateBody=body, Parameters=params, Capabilities=["CAPABILITY_IAM"])
    if not exists:
        request["Tags"] = [{"Key": "project", "Value": "fruits"}]
    aws.call("cloudformation", op, **request)
    if aws.dry_run:
        return
    status = _wait_stack(aws, name)
    say(f"stack {name}: {status}")
    if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
        raise Failed(f"stack {name} ended {status}; see its events in the CloudFormation console")
    for k, v in stack_outputs(aws, bucket).items():
        say(f"  {k}: {v}")


def _stack(aws, name):
    try:
        return aws.call("cloudformation", "DescribeStacks", StackName=name)["Stacks"][0]
    except Exception as e:  # botocore's ClientError "does not exist"
        if "does not exist" in str(e):
            return None
        raise


def _wait_stack(aws, name) -> str:
    while True:
        status = _stack(aws, name)["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            return status
        pause(poll_seconds())


def stack_outputs(aws, bucket: str) -> dict:
    """The roles and subnet `deploy` made (placeholders in a dry run)."""
    name = stack_name(bucket)
    keys = ("ServiceRole", "InstanceProfile", "SubnetId", "LogUri")
    if aws.dry_run:
        return {k: f"<{k} of stack {name}>" for k in keys}
    stack = _stack(aws, name)
    if stack is None:
        raise Failed(f"no stack {name}: run `fruits-emr deploy --bucket {bucket}` first")
    out = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [k for k in keys if k not in out]
    if missing:
        raise Failed(f"stack {name} has no output {', '.join(missing)}")
    return out


# starting a cluster ---------------------------------------------------------
def bucket_of(location: str) -> str:
    if not location.startswith("s3://") or len(location) <= len("s3://"):
        raise Failed(f"{location}: an s3://BUCKET/... location is needed")
    return location[len("s3://"):].split("/", 1)[0]


def check_locations(bucket: str, inputs: list, output: str) -> None:
    """The nodes' role reads photos/, emr/, runs/ and writes runs/ of the
    project's bucket only: refuse what would fail on the cluster, now."""
    for loc in inputs:
        if not (loc.startswith(f"s3://{bucket}/photos/") or loc.startswith(f"s3://{bucket}/runs/")):
            raise Failed(f"{loc}: the cluster reads s3://{bucket}/photos/ (and runs/) only")
    if not output.startswith(f"s3://{bucket}/runs/"):
        raise Failed(f"{output}: the cluster writes under s3://{bucket}/runs/ only")


def gpu_types(t: dict, shape: cluster.Shape) -> list:
    """The cluster's instance types with an NVIDIA GPU (emr/prices.json)."""
    return [i for i in dict.fromkeys((shape.master_type, shape.core_type)) if prices.instance(t, i)["gpus"] > 0]


def cuda_wheels_for(t: dict, shape: cluster.Shape, folder: str) -> list:
    """The CUDA wheels a cluster with GPU nodes needs, from `folder`
    (checked before any request); none for a CPU-only cluster."""
    gpus = gpu_types(t, shape)
    if not gpus:
        return []
    wheels = artifacts.find_cuda_wheels(folder, f"a cluster of {' and '.join(gpus)} (GPU)")
    say(f"GPU nodes ({', '.join(gpus)}): CUDA libraries from {folder}: "
        + ", ".join(f"{os.path.basename(w)} ({os.path.getsize(w) / 1e6:.0f} MB)" for w in wheels))
    return wheels


def start(aws, *, bucket: str, binary: str, purpose: str, shape: cluster.Shape, keep_alive: bool,
          idle_timeout_s: int, steps=(), images: int = 0, cuda_wheels: str = None) -> str:
    """Prints the cost, uploads the artifacts, starts the cluster; its id.
    The binary and, for GPU nodes, the CUDA wheels are checked first."""
    t = prices.table()
    e = prices.estimate(t, aws.region, shape.master_type, shape.core_type, shape.core_count, images)
    say(prices.describe(e, shape.master_type, shape.core_type, shape.core_count, aws.region, images))
    wheels = cuda_wheels_for(t, shape, cuda_wheels or artifacts.default_cuda_wheels())
    art = artifacts.build(binary, cuda_wheels=wheels)
    roles = stack_outputs(aws, bucket)
    artifacts.upload(aws, bucket, art, say=say)
    request = cluster.run_job_flow(bucket=bucket, roles=roles, artifact=art.id, purpose=purpose, shape=shape,
                                   keep_alive=keep_alive, idle_timeout_s=idle_timeout_s, steps=steps)
    r = aws.call("emr", "RunJobFlow", **request)
    cid = r["JobFlowId"] if r else "<cluster id>"
    say(f"cluster {cid} starting: {shape.describe()}, {request['ReleaseLabel']}, idle timeout "
        f"{idle_timeout_s // 60} min" + ("" if keep_alive else ", terminates after its step"))
    return cid


def driver_args(args, output: str, cost_per_hour: float, shape: cluster.Shape) -> list:
    out = ["--output", output, "--model", args.model, "--region", args.region,
           "--cost-per-hour", f"{cost_per_hour:.3f}", "--cluster", shape.describe()]
    out += ["--input", args.input] if args.input else ["--keys", args.keys]
    if args.weights:
        out += ["--weights", args.weights]
    if getattr(args, "resume", False):
        out.append("--resume")
    return out


def shape_of(args) -> cluster.Shape:
    return cluster.Shape(master_type=args.master_type, core_type=args.core_type, core_count=args.core_count,
                         spot=args.spot)


# run ------------------------------------------------------------------------
def run(aws, args) -> None:
    """A transient cluster: starts with the job as its step, terminates
    after it (failed or not); waits and prints the report."""
    check_locations(args.bucket, [args.input or args.keys], args.output)
    shape = shape_of(args)
    hourly = prices.cluster_hourly(prices.table(), aws.region, shape.master_type, shape.core_type,
                                   shape.core_count)
    step = cluster.featurize_step(name="fruits featurize", on_failure="TERMINATE_CLUSTER",
                                  driver_args=driver_args(args, args.output, hourly, shape))
    cid = start(aws, bucket=args.bucket, binary=args.binary, purpose="run", shape=shape, keep_alive=False,
                idle_timeout_s=args.idle_timeout * 60, steps=[step], images=args.images or 0,
                cuda_wheels=args.cuda_wheels)
    if aws.dry_run or args.no_wait:
        return
    state = wait_cluster(aws, cid, ENDED)
    report(aws, args.output)
    if state != "TERMINATED":
        raise Failed(f"cluster {cid} ended {state}")


def wait_cluster(aws, cid: str, until, timeout_s: float = None) -> str:
    """Polls the cluster, printing each new state, until one of `until`."""
    start, last = time.time(), None
    while True:
        c = aws.call("emr", "DescribeCluster", ClusterId=cid)["Cluster"]
        state = c["Status"]["State"]
        if state != last:
            reason = c["Status"].get("StateChangeReason", {}).get("Message", "")
            say(f"cluster {cid}: {state}" + (f" ({reason})" if reason else ""))
            last = state
        if state in until:
            return state
        if timeout_s is not None and time.time() - start > timeout_s:
            raise Failed(f"cluster {cid} not {'/'.join(until)} after {timeout_s:.0f} s (it is {state})")
        pause(poll_seconds())


def wait_step(aws, cid: str, sid: str, timeout_s: float) -> str:
    start, last = time.time(), None
    while True:
        s = aws.call("emr", "DescribeStep", ClusterId=cid, StepId=sid)["Step"]
        state = s["Status"]["State"]
        if state != last:
            say(f"step {sid}: {state}")
            last = state
        if state in ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED"):
            return state
        if time.time() - start > timeout_s:
            raise Failed(f"step {sid} did not finish in {timeout_s:.0f} s (it is {state})")
        pause(poll_seconds())


# up / status / down -----------------------------------------------------------
def up(aws, args) -> str:
    """An interactive cluster for a demo: stays up between steps, and
    terminates itself after --idle-timeout minutes with nothing to do."""
    return start(aws, bucket=args.bucket, binary=args.binary, purpose="interactive", shape=shape_of(args),
                 keep_alive=True, idle_timeout_s=args.idle_timeout * 60, cuda_wheels=args.cuda_wheels)


def active_clusters(aws) -> list:
    r = aws.call("emr", "ListClusters", ClusterStates=ACTIVE)
    return [c for c in (r or {}).get("Clusters", []) if c["Name"].startswith("fruits-")]


def status(aws, args) -> list:
    """Every fruits cluster up now, how long, what it has cost; a warning for
    one up longer than --warn-hours."""
    found = active_clusters(aws)
    if aws.dry_run:
        return []
    if not found:
        say("no fruits cluster is up")
    t = prices.table()
    now = datetime.datetime.now(datetime.timezone.utc)
    for c in found:
        created = c["Status"]["Timeline"]["CreationDateTime"]
        hours = (now - created).total_seconds() / 3600
        groups = aws.call("emr", "ListInstanceGroups", ClusterId=c["Id"])["InstanceGroups"]
        hourly = sum(prices.hourly(t, aws.region, g["InstanceType"]) * g.get("RequestedInstanceCount", 1)
                     for g in groups)
        say(f"{c['Id']} {c['Name']}: {c['Status']['State']}, up {hours:.1f} h, ~${hourly:.2f}/h, "
            f"~${hourly * hours:.2f} so far")
        if hours > args.warn_hours:
            say(f"WARNING: {c['Id']} has been up {hours:.1f} h (more than {args.warn_hours} h): "
                f"`fruits-emr down --cluster-id {c['Id']}` stops it")
    return found


def down(aws, args) -> None:
    ids = [args.cluster_id] if args.cluster_id else [c["Id"] for c in active_clusters(aws)]
    if not ids and not aws.dry_run:
        say("no fruits cluster is up")
        return
    aws.call("emr", "TerminateJobFlows", JobFlowIds=ids or ["<every active fruits cluster>"])
    say(f"terminating {', '.join(ids)}")


# demo -------------------------------------------------------------------------
def demo(aws, args) -> None:
    """up, upload the sample photos, run the job as a step, show the report,
    down: down also on failure, Ctrl-C or SIGTERM."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    photos = f"s3://{args.bucket}/photos/demo-sample/"
    output = f"s3://{args.bucket}/runs/demo-{stamp}/"
    shape = shape_of(args)
    cid = None
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cid = up(aws, args)
        pause(0)
        upload_sample(aws, args.bucket, "photos/demo-sample/")
        pause(0)
        hourly = prices.cluster_hourly(prices.table(), aws.region, shape.master_type, shape.core_type,
                                       shape.core_count)
        args.input, args.keys = photos, None
        step = cluster.featurize_step(name="fruits demo", on_failure="CONTINUE",
                                      driver_args=driver_args(args, output, hourly, shape))
        r = aws.call("emr", "AddJobFlowSteps", JobFlowId=cid, Steps=[step])
        if aws.dry_run:
            return
        state = wait_step(aws, cid, r["StepIds"][0], args.step_timeout)
        if state != "COMPLETED":
            raise Failed(f"the demo step ended {state}; its log is under s3://{args.bucket}/logs/emr/{cid}/steps/")
        report(aws, output)
    except KeyboardInterrupt:
        say("interrupted")
        raise Failed("interrupted") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if cid is not None:
            aws.call("emr", "TerminateJobFlows", JobFlowIds=[cid])
            say(f"terminating {cid}")


# Ctrl-C and SIGTERM during `demo` set a flag that the waits check, instead
# of raising wherever the signal lands: an exception thrown inside botocore
# or urllib3 while they hold a lock can deadlock the TerminateJobFlows call
# that must follow. A second signal raises at once.
STOP = threading.Event()


def _interrupt(signum, frame):
    if STOP.is_set():
        raise KeyboardInterrupt
    STOP.set()


def pause(seconds: float) -> None:
    """Sleeps, or raises KeyboardInterrupt once `demo` was interrupted."""
    if STOP.wait(seconds):
        raise KeyboardInterrupt


def upload_sample(aws, bucket: str, prefix: str) -> int:
    n = 0
    for root, _, files in os.walk(SAMPLE):
        for f in sorted(files):
            path = os.path.join(root, f)
            key = prefix + os.path.relpath(path, SAMPLE).replace(os.sep, "/")
            with open(path, "rb") as fh:
                body = fh.read()
            aws.call("s3", "PutObject", Bucket=bucket, Key=key,
                     Body=body if not aws.dry_run else f"<{len(body)} bytes of {path}>")
            n += 1
    return n


# report -----------------------------------------------------------------------
def report(aws, output: str) -> dict:
    """Prints the run's run.json readably."""
    bucket, _, key = output[len("s3://"):].partition("/")
    key = key.rstrip("/") + "/run.json"
    r = aws.call("s3", "GetObject", Bucket=bucket, Key=key)
    if r is None:
        return {}
    data = json.loads(r["Body"].read())
    from featurize_job import render  # the driver's own rendering (emr/ is on the path: see artifacts)

    print(render(data), flush=True)
    return data
