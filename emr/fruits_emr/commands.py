"""The commands: deploy, run, up, status, down, demo, report. Each takes
typed parameters (the dataclasses below; `cli` makes them) and reads as its
steps; every AWS request goes through `Aws.call` (dry-run, region)."""

import dataclasses
import datetime
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from typing import Optional

from . import artifacts, cluster, files, prices, tls
from .featurize_job import render

ACTIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]
ENDED = ("TERMINATED", "TERMINATED_WITH_ERRORS")


class Failed(Exception):
    """A command could not do its job; the message says why."""


def say(msg: str) -> None:
    """A line for the person at the terminal. A terminal gone (SIGHUP: its
    window closed) or a closed pipe must not stop what is under way, the
    termination of a cluster least of all."""
    try:
        print(f"fruits-emr: {msg}", flush=True)
    except OSError:
        pass


def poll_seconds() -> float:
    return float(os.environ.get("FRUITS_EMR_POLL_S", "30"))


@dataclasses.dataclass(frozen=True)
class Nodes:
    """A cluster to start: where, what shape, and what its nodes install."""
    bucket: str
    shape: cluster.Shape
    binary: str
    idle_timeout_s: int = cluster.DEFAULT_IDLE_TIMEOUT_S
    cuda_wheels: Optional[str] = None  # folder; None: files.default_cuda_wheels()
    model: str = "mobilenetv2"
    weights: Optional[str] = None  # s3://... or random:SEED; None: the pinned hub file


@dataclasses.dataclass(frozen=True)
class Job:
    """What the driver featurises (a folder, a key list, or a folder of
    shards) and where to."""
    output: str
    input: Optional[str] = None
    keys: Optional[str] = None
    shards: Optional[str] = None

    def source(self) -> list:
        """The driver's flag for what it reads."""
        if self.shards:
            return ["--shards", self.shards]
        return ["--input", self.input] if self.input else ["--keys", self.keys]
    resume: bool = False


@dataclasses.dataclass(frozen=True)
class RunArgs:
    nodes: Nodes
    job: Job
    images: int = 0  # for the time and cost estimate
    wait: bool = True


@dataclasses.dataclass(frozen=True)
class Retention:
    """How many days the bucket keeps each kind of object (GDPR storage
    limitation), after its creation: the one place of the defaults, which
    `deploy` passes to the stack (infra.yaml's lifecycle rules). A deleted
    or expired object's data is gone a day later (its noncurrent version),
    except under runs/ (`run_versions` days: recoverable meanwhile) and
    logs/ (`logs` days)."""
    photos: int = 30
    runs: int = 90
    run_versions: int = 7
    logs: int = 30

    def parameters(self) -> list:
        return [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in (
            ("PhotoRetentionDays", self.photos), ("RunRetentionDays", self.runs),
            ("RunVersionDays", self.run_versions), ("LogRetentionDays", self.logs))]


def stack_name(bucket: str) -> str:
    return f"fruits-{bucket}".replace(".", "-")


# deploy -------------------------------------------------------------------
def deploy(aws, bucket: str, retention: Retention = Retention(), rotate_tls: bool = False) -> None:
    """Creates (or updates) the stack of infra.yaml: bucket, network,
    security configuration, roles; then puts the in-transit certificate
    the security configuration names in the bucket the stack made (or keeps
    the one there: in_transit_certificate)."""
    with open(files.data("infra.yaml"), encoding="utf-8") as f:
        body = f.read()
    params = [
        {"ParameterKey": "BucketName", "ParameterValue": bucket},
        {"ParameterKey": "EuropeanRegions", "ParameterValue": ",".join(aws.europe.codes)},
    ] + retention.parameters()
    name = stack_name(bucket)
    exists = not aws.dry_run and _stack(aws, name) is not None
    op = "UpdateStack" if exists else "CreateStack"
    request = dict(StackName=name, TemplateBody=body, Parameters=params, Capabilities=["CAPABILITY_IAM"])
    if not exists:
        request["Tags"] = [cluster.project_tag()]
    try:
        aws.call("cloudformation", op, **request)
        changed = True
    except Exception as e:  # botocore's ClientError; CloudFormation refuses an update that changes nothing
        if not (exists and "No updates are to be performed" in str(e)):
            raise
        changed = False
    if aws.dry_run:
        in_transit_certificate(aws, bucket, f"<KmsKey of stack {name}>", rotate=rotate_tls)
        return
    status = _wait_stack(aws, name) if changed else _stack(aws, name)["StackStatus"]
    say(f"stack {name}: {status}" + ("" if changed else " (unchanged: nothing to update)"))
    if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
        raise Failed(f"stack {name} ended {status}; see its events in the CloudFormation console")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in _stack(aws, name).get("Outputs", [])}
    for k, v in outputs.items():
        say(f"  {k}: {v}")
    in_transit_certificate(aws, bucket, outputs["KmsKey"], rotate=rotate_tls)


def in_transit_certificate(aws, bucket: str, kms_key: str, rotate: bool = False) -> None:
    """The TLS certificate of EMR's in-transit encryption, at the key the
    stack's security configuration names (tls.KEY), in the bucket the stack
    made, so after the stack: EMR reads it when a cluster starts. Made
    (tls.make) and put there when there is none, when the one there names
    another region's nodes, expires within tls.RENEW_DAYS days, or with
    --rotate-tls; otherwise kept, so that a deploy does not change the
    certificate under a cluster (a certificate that is not fruits-emr's,
    the operator's own, is kept too). While a project cluster is up, a
    rotation is refused (--rotate-tls) or put off with a warning (the
    others): a node EMR adds to it would get the new certificate, which
    its other nodes do not trust."""
    where = f"s3://{bucket}/{tls.KEY}"
    current = tls.held(aws, bucket)
    why = tls.reason_to_make(current, aws.region, datetime.datetime.now(datetime.timezone.utc), rotate)
    if why is None:
        say(f"in-transit certificate {where}: kept ({current.describe()})")
        return
    if current is not None:
        up = [c["Id"] for c in active_clusters(aws)]
        if up and rotate:
            raise Failed(f"not rotating {where}: cluster(s) {', '.join(up)} are up with it, and a node EMR adds "
                         f"would get the new one, which they do not trust; rotate when none is up "
                         f"(`fruits-emr status`, `fruits-emr down`)")
        if up:
            say(f"WARNING: in-transit certificate {where} kept although {why}: cluster(s) {', '.join(up)} are up "
                f"with it; deploy again when none is")
            return
    if aws.dry_run:  # it read nothing: the upload a first deploy makes, without a key
        say(f"in-transit certificate {where}: made and put there when there is none, when it names another "
            f"region, expires within {tls.RENEW_DAYS} days or with --rotate-tls ({tls.names(aws.region)}, "
            f"{tls.VALID_DAYS} days); otherwise kept")
        tls.upload(aws, bucket, kms_key, None, aws.region)
        return
    bundle = tls.make(aws.region)
    tls.upload(aws, bucket, kms_key, bundle, aws.region)
    say(f"in-transit certificate {where}: {'made' if current is None else 'rotated'}, since {why}: "
        f"{bundle.certificate.describe()}")


def check_in_transit_certificate(aws, bucket: str) -> None:
    """Before a cluster is asked for: the certificate its security
    configuration names is in the bucket, and not about to expire (EMR
    would only fail the cluster minutes later)."""
    current = tls.held(aws, bucket)
    if aws.dry_run:
        return
    where = f"s3://{bucket}/{tls.KEY}"
    if current is None:
        raise Failed(f"no in-transit certificate at {where}, which the stack's security configuration names: "
                     f"`fruits-emr deploy --bucket {bucket}` puts one there")
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    if current.ours() and (current.not_after is None or current.not_after < soon):
        raise Failed(f"the in-transit certificate at {where} ({current.describe()}) has expired or expires within "
                     f"a day: `fruits-emr deploy --bucket {bucket}` makes a new one")


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
    """The roles, subnet and security configuration `deploy` made
    (placeholders in a dry run)."""
    name = stack_name(bucket)
    keys = ("ServiceRole", "InstanceProfile", "SubnetId", "LogUri", "SecurityConfiguration")
    if aws.dry_run:
        return {k: f"<{k} of stack {name}>" for k in keys}
    stack = _stack(aws, name)
    if stack is None:
        raise Failed(f"no stack {name}: run `fruits-emr deploy --bucket {bucket}` first")
    out = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [k for k in keys if k not in out]
    if missing:
        raise Failed(f"stack {name} has no output {', '.join(missing)}: it predates this fruits-emr; update it "
                     f"with `fruits-emr deploy --bucket {bucket}`")
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
    """The cluster's instance types with an NVIDIA GPU (emr/fruits_emr/prices.json)."""
    return [i for i in dict.fromkeys((shape.master_type, shape.core_type)) if prices.instance(t, i)["gpus"] > 0]


def cuda_wheels_for(t: dict, shape: cluster.Shape, folder: str) -> list:
    """The CUDA wheels a cluster with GPU nodes needs, from `folder`
    (checked before any request); none for a CPU-only cluster."""
    gpus = gpu_types(t, shape)
    if not gpus:
        return []
    wheels = artifacts.find_cuda_wheels(folder, f"a cluster of {' and '.join(gpus)} (GPU)")
    say(f"GPU nodes ({', '.join(gpus)}): CUDA libraries from {folder}, as pinned: "
        + ", ".join(f"{os.path.basename(w.path)} ({os.path.getsize(w.path) / 1e6:.0f} MB)" for w in wheels))
    return wheels


def start(aws, nodes: Nodes, *, purpose: str, keep_alive: bool, job: Optional[Job] = None, images: int = 0) -> str:
    """Prints the cost, uploads the artifacts, starts the cluster (with
    `job` as its step, which terminates it when it fails); its id. The
    binary and, for GPU nodes, the CUDA wheels are checked first."""
    shape = nodes.shape
    t = prices.table()
    e = prices.estimate(t, aws.region, shape.master_type, shape.core_type, shape.core_count, images)
    say(prices.describe(e, shape.master_type, shape.core_type, shape.core_count, aws.region, images))
    wheels = cuda_wheels_for(t, shape, nodes.cuda_wheels or files.default_cuda_wheels())
    art = artifacts.build(nodes.binary, cuda_wheels=wheels)
    roles = stack_outputs(aws, nodes.bucket)
    check_in_transit_certificate(aws, nodes.bucket)
    artifacts.upload(aws, nodes.bucket, art, say=say)
    steps = [job_step(aws, nodes, job, name="fruits featurize", on_failure="TERMINATE_CLUSTER")] if job else []
    request = cluster.run_job_flow(bucket=nodes.bucket, region=aws.region, roles=roles, artifact=art.id,
                                   purpose=purpose, shape=shape, keep_alive=keep_alive,
                                   idle_timeout_s=nodes.idle_timeout_s, steps=steps)
    pause(0)  # a demo interrupted during the uploads starts no cluster
    r = aws.call("emr", "RunJobFlow", **request)
    cid = r["JobFlowId"] if r else "<cluster id>"
    say(f"cluster {cid} starting: {shape.describe()}, {request['ReleaseLabel']}, idle timeout "
        f"{nodes.idle_timeout_s // 60} min" + ("" if keep_alive else ", terminates after its step"))
    return cid


def job_step(aws, nodes: Nodes, job: Job, *, name: str, on_failure: str) -> dict:
    """The step running the driver for `job`; the pinned weights are staged
    in the bucket first unless --weights names others."""
    weights = nodes.weights or artifacts.stage_pinned_weights(aws, nodes.bucket, nodes.binary, nodes.model, say)
    return cluster.featurize_step(name=name, on_failure=on_failure,
                                  driver_args=driver_args(aws, nodes, job, weights))


def driver_args(aws, nodes: Nodes, job: Job, weights: str) -> list:
    """The driver's command line for `job` on `nodes`' cluster."""
    shape = nodes.shape
    hourly = prices.cluster_hourly(prices.table(), aws.region, shape.master_type, shape.core_type, shape.core_count)
    # Tasks sized by work: minutes of it at the core node's rate.
    per_task = prices.images_per_task(prices.table(), shape.core_type)
    out = ["--output", job.output, "--model", nodes.model, "--region", aws.region,
           "--cost-per-hour", f"{hourly:.3f}", "--cluster", shape.describe(), "--weights", weights,
           "--images-per-partition", str(per_task)]
    out += job.source()
    if job.resume:
        out.append("--resume")
    return out


# run ------------------------------------------------------------------------
def run(aws, args: RunArgs) -> None:
    """A transient cluster: starts with the job as its step, terminates
    after it (failed or not); waits and prints the report."""
    job = args.job
    check_locations(args.nodes.bucket, [job.source()[1]], job.output)
    cid = start(aws, args.nodes, purpose="run", keep_alive=False, job=job, images=args.images)
    if aws.dry_run or not args.wait:
        return
    state = wait_cluster(aws, cid, ENDED)
    report(aws, job.output)
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
def up(aws, nodes: Nodes) -> str:
    """An interactive cluster for a demo: stays up between steps, and
    terminates itself after its idle timeout with nothing to do."""
    return start(aws, nodes, purpose="interactive", keep_alive=True)


def active_clusters(aws) -> list:
    """The clusters up now that carry the project's tag (cluster.json's), so
    that `status` and `down` never count or stop another's cluster, whatever
    its name. ListClusters gives no tags: DescribeCluster of each."""
    tag, found, marker = cluster.project_tag(), [], None
    while True:
        r = aws.call("emr", "ListClusters", ClusterStates=ACTIVE, **({"Marker": marker} if marker else {}))
        for c in (r or {}).get("Clusters", []):
            if tag in aws.call("emr", "DescribeCluster", ClusterId=c["Id"])["Cluster"].get("Tags", []):
                found.append(c)
        marker = (r or {}).get("Marker")
        if not marker:
            return found


def status(aws, warn_hours: float = 2.0) -> list:
    """Every fruits cluster up now, how long, what it has cost; a warning for
    one up longer than `warn_hours`."""
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
        if hours > warn_hours:
            say(f"WARNING: {c['Id']} has been up {hours:.1f} h (more than {warn_hours} h): "
                f"`fruits-emr down --cluster-id {c['Id']}` stops it")
    return found


def down(aws, cluster_id: Optional[str] = None) -> None:
    """Terminates `cluster_id`, or every cluster up with the project's tag."""
    ids = [cluster_id] if cluster_id else [c["Id"] for c in active_clusters(aws)]
    if not ids and not aws.dry_run:
        say("no fruits cluster is up")
        return
    aws.call("emr", "TerminateJobFlows", JobFlowIds=ids or ["<every active cluster tagged project=fruits>"])
    say(f"terminating {', '.join(ids)}")


# demo -------------------------------------------------------------------------
def demo(aws, nodes: Nodes, step_timeout_s: float = 3600) -> None:
    """up, upload the sample photos, run the job as a step, show the report,
    down: down on every exit, failure, Ctrl-C, SIGTERM or SIGHUP (its
    terminal closed) included."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    job = Job(input=f"s3://{nodes.bucket}/photos/demo-sample/", output=f"s3://{nodes.bucket}/runs/demo-{stamp}/")
    cid = None
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        cid = up(aws, nodes)
        pause(0)
        upload_sample(aws, nodes.binary, nodes.bucket, "photos/demo-sample/")
        pause(0)
        step = job_step(aws, nodes, job, name="fruits demo", on_failure="CONTINUE")
        r = aws.call("emr", "AddJobFlowSteps", JobFlowId=cid, Steps=[step])
        if aws.dry_run:
            return
        state = wait_step(aws, cid, r["StepIds"][0], step_timeout_s)
        if state != "COMPLETED":
            raise Failed(f"the demo step ended {state}; its log is under s3://{nodes.bucket}/logs/emr/{cid}/steps/")
        report(aws, job.output)
    except KeyboardInterrupt:
        say(f"interrupted ({STOPPED_BY[0].name})" if STOPPED_BY else "interrupted")
        raise Failed("interrupted") from None
    finally:
        try:
            if cid is not None:
                terminate(aws, cid)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# A signal during `demo` sets a flag that its waits check, and is never
# raised wherever it lands: an exception thrown inside botocore or urllib3
# while they hold a lock can deadlock the TerminateJobFlows call that must
# follow, and one thrown while RunJobFlow is under way would lose the id of
# the cluster it starts. SIGHUP too: closing the terminal must not leave a
# cluster up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP = threading.Event()
STOPPED_BY = []  # the first signal received


def _interrupt(signum, frame):
    if not STOP.is_set():
        STOPPED_BY.append(signal.Signals(signum))
    STOP.set()


def pause(seconds: float) -> None:
    """Sleeps, or raises KeyboardInterrupt once `demo` was interrupted."""
    if STOP.wait(seconds):
        raise KeyboardInterrupt


# Seconds between TerminateJobFlows tries (after botocore's own retries):
# about half a minute in all, for a network that comes back.
TERMINATE_RETRY_S = (1, 2, 4, 8, 16)


def terminate(aws, cid: str) -> None:
    """TerminateJobFlows, tried again after a failure, with SIGINT, SIGTERM
    and SIGHUP ignored until it returns: a cluster left up costs by the
    hour. Raises Failed, naming the cluster, if every try failed."""
    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        for wait in (0,) + TERMINATE_RETRY_S:
            time.sleep(wait)
            try:
                aws.call("emr", "TerminateJobFlows", JobFlowIds=[cid])
                say(f"terminating {cid}")
                return
            except Exception as e:  # any: the cluster must not be left up
                error = e
                say(f"TerminateJobFlows {cid} failed: {e}")
        raise Failed(f"cluster {cid} may still be up, TerminateJobFlows failed {len(TERMINATE_RETRY_S) + 1} times "
                     f"({error}): stop it with `fruits-emr down --cluster-id {cid}`")
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)


def upload_sample(aws, binary: str, bucket: str, prefix: str) -> int:
    """Puts the sample photos built into the binary (`fruits demo
    --sample-only` writes them) under `prefix`."""
    with tempfile.TemporaryDirectory() as tmp:
        made = subprocess.run([binary, "demo", "--sample-only", "--output", tmp], capture_output=True, text=True)
        if made.returncode != 0:
            raise Failed(f"{binary} demo --sample-only exited {made.returncode}: {made.stderr.strip()[-400:]}")
        sample = os.path.join(tmp, "sample")
        n = 0
        for root, _, names in sorted(os.walk(sample)):
            for f in sorted(names):
                path = os.path.join(root, f)
                key = prefix + os.path.relpath(path, sample).replace(os.sep, "/")
                with open(path, "rb") as fh:
                    body = fh.read()
                aws.call("s3", "PutObject", Bucket=bucket, Key=key,
                         Body=body if not aws.dry_run else f"<{len(body)} bytes of {os.path.relpath(path, tmp)}>")
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
    print(render(data), flush=True)  # the driver's own rendering
    return data
