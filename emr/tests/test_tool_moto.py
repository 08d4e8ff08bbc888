"""fruits-emr against moto's server mode (S3, CloudFormation, IAM, EMR),
through a proxy that records every request: what the commands send, and
that a region outside Europe is refused before any request."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import parse_qs

import boto3
import pytest
from conftest import EMR, aws_env, fake_cuda_wheels

TOOL = os.path.join(EMR, "fruits-emr")


@pytest.fixture(scope="session")
def cuda_wheels(tmp_path_factory):
    """A folder as emr/fetch_cuda_wheels.sh leaves it, with small fake wheels."""
    folder = tmp_path_factory.mktemp("cuda-wheels")
    fake_cuda_wheels(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def default_cuda_wheels(cuda_wheels, monkeypatch):
    """Every command finds the wheels where fruits-emr looks by default."""
    monkeypatch.setenv("FRUITS_CUDA_WHEELS", cuda_wheels)


@pytest.fixture(autouse=True)
def default_binary(fruits_bin, monkeypatch):
    """Commands without --binary ask the built binary for the regions."""
    monkeypatch.setenv("FRUITS_BIN", fruits_bin)


def tool(endpoint, *args, timeout=120, env_extra=None):
    env = aws_env(endpoint, FRUITS_EMR_PYTHON=sys.executable, FRUITS_EMR_POLL_S="0.1", **(env_extra or {}))
    return subprocess.run([TOOL] + list(args), capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def binary(tmp_path, fruits_bin):
    """The file the nodes would install: its bytes are what the tool uploads
    and hashes (a few, not the build's megabytes); it answers as the built
    binary does (--version, the regions, the sample photos)."""
    b = tmp_path / "fruits"
    b.write_text(f"#!/bin/sh\nexec '{fruits_bin}' \"$@\"\n")
    b.chmod(0o755)
    return str(b)


def calls(recorder, target_prefix=None):
    """(operation, params) of each recorded JSON-protocol request (EMR)."""
    out = []
    for r in recorder.requests():
        if r["target"] and (target_prefix is None or r["target"].startswith(target_prefix)):
            out.append((r["target"].split(".")[-1], json.loads(r["body"] or "{}"), r["region"]))
    return out


def client(endpoint, service):
    return boto3.client(service, endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="test-key-id",
                        aws_secret_access_key="test-secret-key")


@pytest.fixture
def deployed(recorder, tmp_path):
    bucket = f"fruits-{int(time.time() * 1000) % 10**9}"
    out = tool(recorder.endpoint, "deploy", "--bucket", bucket)
    assert out.returncode == 0, out.stderr + out.stdout
    return bucket


def test_deploy_creates_the_stack_with_the_binarys_european_regions(recorder, deployed, fruits_bin):
    stack = client(recorder.endpoint, "cloudformation").describe_stacks(StackName=f"fruits-{deployed}")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    # What was sent (moto renders a list parameter back as a Python list).
    (create,) = [parse_qs(r["body"]) for r in recorder.requests() if "Action=CreateStack" in r["body"]]
    sent = {create[f"Parameters.member.{i}.ParameterKey"][0]: create[f"Parameters.member.{i}.ParameterValue"][0]
            for i in (1, 2)}
    binary = json.loads(subprocess.run([fruits_bin, "regions", "--json"], capture_output=True, text=True).stdout)
    assert sent["EuropeanRegions"].split(",") == [r["code"] for r in binary["regions"]]
    assert sent["BucketName"] == deployed
    assert create["Capabilities.member.1"] == ["CAPABILITY_IAM"]
    outputs = {o["OutputKey"] for o in stack["Outputs"]}
    assert {"ServiceRole", "InstanceProfile", "SubnetId", "LogUri"} <= outputs
    # The stack made the bucket (its settings are checked in the template: test_infra.py).
    client(recorder.endpoint, "s3").head_bucket(Bucket=deployed)
    # Deploying again updates the stack instead of failing.
    again = tool(recorder.endpoint, "deploy", "--bucket", deployed)
    assert again.returncode == 0 or "No updates" in again.stderr, again.stderr


def test_run_sends_a_transient_cluster_with_the_job_as_its_step(recorder, deployed, binary):
    out = tool(recorder.endpoint, "run", "--bucket", deployed, "--input", f"s3://{deployed}/photos/fruits-360/",
               "--output", f"s3://{deployed}/runs/run-1/", "--binary", binary, "--images", "90000", "--no-wait")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "estimated cost: $" in out.stdout and "90000 images" in out.stdout
    # The cost is printed before the cluster is asked for.
    assert out.stdout.index("estimated cost") < out.stdout.index("starting")
    (op, req, region), = [c for c in calls(recorder, "ElasticMapReduce") if c[0] == "RunJobFlow"]
    assert region == "eu-west-1"
    assert req["ReleaseLabel"] == "emr-7.13.0"
    assert [a["Name"] for a in req["Applications"]] == ["Hadoop", "Spark"]
    assert req["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert req["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    groups = {g["InstanceRole"]: g for g in req["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["InstanceType"] == "m5.xlarge" and groups["MASTER"]["InstanceCount"] == 1
    assert groups["CORE"]["InstanceType"] == "g4dn.xlarge" and groups["CORE"]["InstanceCount"] == 2
    assert groups["CORE"]["Market"] == "ON_DEMAND"
    assert "Ec2KeyName" not in req["Instances"], "no SSH key: no SSH"
    assert req["LogUri"] == f"s3://{deployed}/logs/emr/"
    (boot,) = req["BootstrapActions"]
    prefix = boot["ScriptBootstrapAction"]["Args"][0]
    assert boot["ScriptBootstrapAction"]["Path"] == prefix + "bootstrap.sh"
    spark = next(c["Properties"] for c in req["Configurations"] if c["Classification"] == "spark-defaults")
    assert spark["spark.executor.cores"] == spark["spark.task.cpus"] == "4", "one task owns a node"
    assert spark["spark.executor.instances"] == "2"
    (step,) = req["Steps"]
    assert step["ActionOnFailure"] == "TERMINATE_CLUSTER"
    args = step["HadoopJarStep"]["Args"]
    assert args[:4] == ["spark-submit", "--deploy-mode", "client", "/usr/local/lib/fruits/featurize_job.py"]
    assert args[args.index("--input") + 1] == f"s3://{deployed}/photos/fruits-360/"
    assert args[args.index("--output") + 1] == f"s3://{deployed}/runs/run-1/"
    assert float(args[args.index("--cost-per-hour") + 1]) > 0
    # The artifacts are in S3 where the bootstrap action looks, with their hashes.
    s3 = client(recorder.endpoint, "s3")
    key = prefix[len(f"s3://{deployed}/"):]
    manifest = json.loads(s3.get_object(Bucket=deployed, Key=key + "fruits.json")["Body"].read())
    assert manifest["sha256"] == hashlib.sha256(open(binary, "rb").read()).hexdigest()
    driver = s3.get_object(Bucket=deployed, Key=key + "featurize_job.py")["Body"].read()
    assert hashlib.sha256(driver).hexdigest() == manifest["driver_sha256"]
    # g4dn nodes have a GPU: the CUDA wheels went up, content-addressed next to the artifact's folder,
    # where the bootstrap action looks (${SRC%/*}/cuda/<sha256>/<name>), listed in the manifest.
    wheels = sorted(os.listdir(os.environ["FRUITS_CUDA_WHEELS"]))
    assert [w["name"] for w in manifest["cuda_libs"]] == wheels
    assert manifest["cuda_driver_min"] == "525.60.13"
    for w in manifest["cuda_libs"]:
        local = open(os.path.join(os.environ["FRUITS_CUDA_WHEELS"], w["name"]), "rb").read()
        assert w["sha256"] == hashlib.sha256(local).hexdigest()
        cuda_key = key.rstrip("/").rsplit("/", 1)[0] + f"/cuda/{w['sha256']}/{w['name']}"
        assert s3.get_object(Bucket=deployed, Key=cuda_key)["Body"].read() == local
    assert f"CUDA libraries from {os.environ['FRUITS_CUDA_WHEELS']}" in out.stdout
    # A second cluster does not upload them again.
    before = len(recorder.requests())
    again = tool(recorder.endpoint, "run", "--bucket", deployed, "--input", f"s3://{deployed}/photos/fruits-360/",
                 "--output", f"s3://{deployed}/runs/run-2/", "--binary", binary, "--no-wait")
    assert again.returncode == 0, again.stderr + again.stdout
    puts = [r["path"] for r in recorder.requests()[before:] if r["method"] == "PUT"]
    assert not [p for p in puts if "/emr/cuda/" in p] and any(p.endswith("/fruits.json") for p in puts), puts
    assert again.stdout.count("is there already") == len(wheels)
    # The cluster, as EMR (moto) holds it.
    clusters = client(recorder.endpoint, "emr").list_clusters()["Clusters"]
    assert any(c["Name"].startswith("fruits-run-") for c in clusters)


def test_up_status_down(recorder, deployed, binary, tmp_path):
    # CPU nodes only: no CUDA wheels needed, none uploaded.
    out = tool(recorder.endpoint, "up", "--bucket", deployed, "--binary", binary, "--core-count", "1",
               "--core-type", "m5.xlarge", "--idle-timeout", "20", "--cuda-wheels", str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr + out.stdout
    (_, req, _), = [c for c in calls(recorder, "ElasticMapReduce") if c[0] == "RunJobFlow"]
    prefix = req["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"][0][len(f"s3://{deployed}/"):]
    manifest = json.loads(client(recorder.endpoint, "s3").get_object(Bucket=deployed, Key=prefix + "fruits.json")
                          ["Body"].read())
    assert manifest["cuda_libs"] == [] and manifest["cuda_driver_min"] is None
    assert not [r for r in recorder.requests() if "/emr/cuda/" in r["path"]]
    assert req["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert req["AutoTerminationPolicy"] == {"IdleTimeout": 1200}
    assert "Steps" not in req
    status = tool(recorder.endpoint, "status", "--warn-hours", "0")
    assert status.returncode == 0, status.stderr
    assert "up 0.0 h" in status.stdout and "WARNING" in status.stdout, status.stdout
    down = tool(recorder.endpoint, "down")
    assert down.returncode == 0, down.stderr
    (_, term, _), = [c for c in calls(recorder, "ElasticMapReduce") if c[0] == "TerminateJobFlows"]
    emr = client(recorder.endpoint, "emr")
    for cid in term["JobFlowIds"]:
        assert emr.describe_cluster(ClusterId=cid)["Cluster"]["Status"]["State"].startswith("TERMINAT")
    assert "no fruits cluster is up" in tool(recorder.endpoint, "status").stdout


def test_demo_terminates_its_cluster_when_the_job_fails_or_is_interrupted(recorder, deployed, binary):
    # moto never runs the step: the demo times out, and still brings the cluster down.
    out = tool(recorder.endpoint, "demo", "--bucket", deployed, "--binary", binary, "--step-timeout", "1")
    assert out.returncode == 1, out.stdout
    assert "did not finish" in out.stderr
    ops = [c[0] for c in calls(recorder, "ElasticMapReduce")]
    assert ops.index("RunJobFlow") < ops.index("AddJobFlowSteps") < ops.index("TerminateJobFlows")
    uploaded = [r["path"] for r in recorder.requests() if r["method"] == "PUT" and "/photos/demo-sample/" in r["path"]]
    assert len(uploaded) == 19
    # Ctrl-C while waiting: the cluster is terminated too.
    env = aws_env(recorder.endpoint, FRUITS_EMR_PYTHON=sys.executable, FRUITS_EMR_POLL_S="0.1")
    proc = subprocess.Popen([TOOL, "demo", "--bucket", deployed, "--binary", binary], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and sum(c[0] == "AddJobFlowSteps" for c in calls(recorder)) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    assert sum(c[0] == "AddJobFlowSteps" for c in calls(recorder)) == 2, "the demo never added its step"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stdout + stderr
    assert "interrupted" in stdout + stderr
    assert sum(c[0] == "TerminateJobFlows" for c in calls(recorder)) == 2


def test_a_region_outside_europe_is_refused_before_any_request(recorder, binary):
    for args in (["deploy", "--bucket", "b"], ["status"], ["down"],
                 ["run", "--bucket", "b", "--input", "s3://b/photos/x/", "--output", "s3://b/runs/r/",
                  "--binary", binary]):
        out = tool(recorder.endpoint, "--region", "us-east-1", *args)
        assert out.returncode == 1, args
        assert "region us-east-1 is outside Europe" in out.stderr, out.stderr
    out = tool(recorder.endpoint, "status", env_extra={"AWS_REGION": "ap-south-1"})
    assert out.returncode == 1 and "outside Europe" in out.stderr
    assert recorder.requests() == [], "not one request"


def test_dry_run_prints_the_requests_and_sends_none(recorder, binary):
    out = tool(recorder.endpoint, "--dry-run", "run", "--bucket", "fruits-demo", "--input",
               "s3://fruits-demo/photos/fruits-360/Training/", "--output", "s3://fruits-demo/runs/run-1/",
               "--binary", binary)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("aws ")]
    ops = [line.split()[1] + " " + line.split()[2] for line in lines]
    assert ops == ["s3 HeadObject", "s3 PutObject"] * 2 + ["s3 PutObject"] * 4 + ["emr RunJobFlow"], ops
    assert "/cuda/" in json.loads(lines[0].split(" ", 3)[3])["Key"]
    req = json.loads(lines[-1].split(" ", 3)[3])
    assert req["ServiceRole"] == "<ServiceRole of stack fruits-fruits-demo>"
    assert req["Steps"][0]["HadoopJarStep"]["Args"][0] == "spark-submit"
    for cmd in (["deploy", "--bucket", "fruits-demo"], ["up", "--bucket", "fruits-demo", "--binary", binary],
                ["down", "--cluster-id", "j-123"], ["demo", "--bucket", "fruits-demo", "--binary", binary]):
        out = tool(recorder.endpoint, "--dry-run", *cmd)
        assert out.returncode == 0, (cmd, out.stderr)
        assert "aws " in out.stdout, cmd
    assert recorder.requests() == [], "a dry run sends nothing"


def test_outputs_the_nodes_cannot_write_are_refused_first(recorder, binary):
    out = tool(recorder.endpoint, "run", "--bucket", "fruits-demo", "--input", "s3://fruits-demo/photos/x/",
               "--output", "s3://fruits-demo/elsewhere/", "--binary", binary)
    assert out.returncode == 1 and "writes under s3://fruits-demo/runs/ only" in out.stderr
    assert recorder.requests() == []


def test_a_gpu_cluster_without_its_cuda_wheels_is_refused_before_any_request(recorder, binary, tmp_path):
    run = ["run", "--bucket", "fruits-demo", "--input", "s3://fruits-demo/photos/x/", "--output",
           "s3://fruits-demo/runs/r/", "--binary", binary]
    missing = tmp_path / "no-such-folder"
    for args in (run + ["--cuda-wheels", str(missing)], ["up", "--bucket", "fruits-demo", "--binary", binary],
                 ["demo", "--bucket", "fruits-demo", "--binary", binary, "--core-type", "g4dn.2xlarge"]):
        out = tool(recorder.endpoint, *args, env_extra={"FRUITS_CUDA_WHEELS": str(missing)})
        assert out.returncode == 1, (args, out.stdout)
        assert f"no CUDA wheels folder {missing}: a cluster of g4dn." in out.stderr, out.stderr
        assert f"emr/fetch_cuda_wheels.sh {missing}" in out.stderr
    # A folder without one of the pinned wheels: its name is said.
    partial = tmp_path / "partial"
    fake_cuda_wheels(partial)
    nvrtc = next(n for n in os.listdir(partial) if n.startswith("nvidia_cuda_nvrtc_cu12-"))
    (partial / nvrtc).unlink()
    out = tool(recorder.endpoint, *run, "--cuda-wheels", str(partial))
    assert out.returncode == 1
    assert f"no {nvrtc.split('-py3')[0]}-*x86_64.whl in {partial}" in out.stderr, out.stderr
    assert recorder.requests() == [], "not one request"
