"""fruits-emr against moto's server mode (S3, CloudFormation, IAM, EMR, EC2,
KMS), through a proxy that records every request: what the commands send,
what the stack makes, and that a region outside Europe, or a CUDA wheel
that is not the pinned one, is refused before any request. The commands
run the copy of fruits-emr that pins the fake CUDA wheels (conftest's
`pinned`)."""

import ast
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import parse_qs

import boto3
import pytest
from conftest import EMR, aws_env
from test_tls import check_bundle  # the certificate, read back by openssl

TOOL = None  # the pinned copy's emr/fruits-emr (pinned_tool)


@pytest.fixture(autouse=True)
def pinned_tool(pinned, monkeypatch):
    """Every command runs the copy that pins the fake wheels, and finds them
    where fruits-emr looks by default."""
    monkeypatch.setitem(globals(), "TOOL", pinned.tool)
    monkeypatch.setenv("FRUITS_CUDA_WHEELS", pinned.wheels)


@pytest.fixture(autouse=True)
def default_binary(fruits_bin, monkeypatch):
    """Commands without --binary ask the built binary for the regions."""
    monkeypatch.setenv("FRUITS_BIN", fruits_bin)


def tool(endpoint, *args, timeout=120, env_extra=None):
    env = aws_env(endpoint, FRUITS_EMR_PYTHON=sys.executable, FRUITS_EMR_POLL_S="0.1", **(env_extra or {}))
    return subprocess.run([TOOL] + list(args), capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def hub_weights(tmp_path_factory, fruits_bin):
    """What `fruits weights fetch` finds in the model hub's cache, in small:
    deterministic weights of the real shapes (the hub is not reachable)."""
    w = tmp_path_factory.mktemp("hub") / "mobilenetv2.safetensors"
    subprocess.run([fruits_bin, "weights", "init", "--model", "mobilenetv2", "--seed", "5", "--out", str(w)],
                   check=True, capture_output=True)
    return str(w)


@pytest.fixture
def binary(tmp_path, fruits_bin, hub_weights):
    """The file the nodes would install: its bytes are what the tool uploads
    and hashes (a few, not the build's megabytes); it answers as the built
    binary does (--version, the regions, the sample photos), and `weights
    fetch` with the path of the hub's file."""
    b = tmp_path / "fruits"
    b.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'weights fetch' ] && echo '{hub_weights}' && exit 0\n"
                 f"exec '{fruits_bin}' \"$@\"\n")
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


def stack_emr(endpoint):
    """EMR as the stack's resources see it. moto's server takes EMR's region
    from the host name alone (127.0.0.1: us-east-1, where fruits-emr's own
    EMR requests land), while CloudFormation makes the stack's EMR resources
    in the stack's region, eu-west-1: this client names that region's host."""
    emr = client(endpoint, "emr")

    def regional_host(request, **_):
        request.headers["Host"] = "elasticmapreduce.eu-west-1.amazonaws.com"

    emr.meta.events.register("before-send.emr.*", regional_host)
    return emr


@pytest.fixture
def deployed(recorder, tmp_path):
    bucket = f"fruits-{int(time.time() * 1000) % 10**9}"
    out = tool(recorder.endpoint, "deploy", "--bucket", bucket)
    assert out.returncode == 0, out.stderr + out.stdout
    return bucket


def sent_parameters(recorder, action):
    """The parameters of the stack's `action` request (CreateStack...)."""
    (req,) = [parse_qs(r["body"]) for r in recorder.requests() if f"Action={action}" in r["body"]]
    n = len([k for k in req if k.endswith(".ParameterKey")])
    return {req[f"Parameters.member.{i}.ParameterKey"][0]: req[f"Parameters.member.{i}.ParameterValue"][0]
            for i in range(1, n + 1)}, req


def test_deploy_creates_the_stack_with_the_binarys_european_regions(recorder, deployed, fruits_bin):
    stack = client(recorder.endpoint, "cloudformation").describe_stacks(StackName=f"fruits-{deployed}")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    sent, create = sent_parameters(recorder, "CreateStack")
    binary = json.loads(subprocess.run([fruits_bin, "regions", "--json"], capture_output=True, text=True).stdout)
    assert sent["EuropeanRegions"].split(",") == [r["code"] for r in binary["regions"]]
    assert sent["BucketName"] == deployed
    # The retention, stated defaults (GDPR storage limitation), always sent.
    assert {k: sent[k] for k in ("PhotoRetentionDays", "RunRetentionDays", "RunVersionDays", "LogRetentionDays")} \
        == {"PhotoRetentionDays": "30", "RunRetentionDays": "90", "RunVersionDays": "7", "LogRetentionDays": "30"}
    assert create["Capabilities.member.1"] == ["CAPABILITY_IAM"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert {"ServiceRole", "InstanceProfile", "SubnetId", "LogUri", "SecurityConfiguration", "KmsKey"} <= set(outputs)
    # The stack made the bucket, encrypted with the stack's key (its other settings are checked in the
    # template: test_infra.py).
    rule = client(recorder.endpoint, "s3").get_bucket_encryption(Bucket=deployed)[
        "ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert rule == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": outputs["KmsKey"]}
    assert outputs["KmsKey"] in [k["KeyArn"] for k in client(recorder.endpoint, "kms").list_keys()["Keys"]]
    # The security configuration every cluster gets, as EMR holds it.
    sc = stack_emr(recorder.endpoint).describe_security_configuration(Name=outputs["SecurityConfiguration"])
    # (AWS answers JSON; moto keeps what CloudFormation gave it, in Python's notation)
    conf = ast.literal_eval(sc["SecurityConfiguration"])
    assert conf["InstanceMetadataServiceConfiguration"] == {"MinimumInstanceMetadataServiceVersion": 2,
                                                            "HttpPutResponseHopLimit": 1}
    enc = conf["EncryptionConfiguration"]
    assert enc["EnableAtRestEncryption"] is True and enc["EnableInTransitEncryption"] is True
    # In transit: EMR's PEM provider, naming the zip deploy put in the stack's bucket (what the zip holds:
    # test_deploy_puts_the_in_transit_certificate_in_the_bucket_after_the_stack).
    assert enc["InTransitEncryptionConfiguration"] == {"TLSCertificateConfiguration": {
        "CertificateProviderType": "PEM", "S3Object": f"s3://{deployed}/emr/tls/in-transit.zip"}}
    assert client(recorder.endpoint, "s3").head_object(Bucket=deployed, Key="emr/tls/in-transit.zip")
    assert enc["AtRestEncryptionConfiguration"] == {
        "S3EncryptionConfiguration": {"EncryptionMode": "SSE-KMS", "AwsKmsKey": outputs["KmsKey"]},
        "LocalDiskEncryptionConfiguration": {"EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": outputs["KmsKey"],
                                             "EnableEbsEncryption": True}}
    # The nodes' subnet: private, its only way out of the VPC the S3 gateway endpoint; KMS in the subnet.
    # (No public IPs: moto ignores MapPublicIpOnLaunch, the template says false, test_infra.py.)
    ec2 = client(recorder.endpoint, "ec2")
    vpc = ec2.describe_subnets(SubnetIds=[outputs["SubnetId"]])["Subnets"][0]["VpcId"]
    endpoints = {e["ServiceName"]: e for e in ec2.describe_vpc_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]}
    s3 = endpoints["com.amazonaws.eu-west-1.s3"]
    assert s3["VpcEndpointType"] == "Gateway"
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    routes = [r for t in tables for r in t["Routes"]]
    assert all(r.get("GatewayId") in ("local", s3["VpcEndpointId"]) for r in routes), routes
    assert [r["DestinationPrefixListId"] for r in routes if r["GatewayId"] == s3["VpcEndpointId"]], routes
    assert not ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])[
        "InternetGateways"]
    assert not ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NatGateways"]
    kms = endpoints["com.amazonaws.eu-west-1.kms"]
    assert kms["VpcEndpointType"] == "Interface" and kms["SubnetIds"] == [outputs["SubnetId"]]
    assert kms["PrivateDnsEnabled"] is True
    # Deploying again updates the stack instead of failing, with the deployer's retention (--log-days as well,
    # in a dry run: moto cannot update a bucket CloudFormation named, the access-log bucket).
    again = tool(recorder.endpoint, "deploy", "--bucket", deployed, "--photo-days", "14", "--run-days", "60",
                 "--run-version-days", "3")
    assert again.returncode == 0 or "No updates" in again.stderr, again.stderr
    sent, _ = sent_parameters(recorder, "UpdateStack")
    assert {k: sent[k] for k in ("PhotoRetentionDays", "RunRetentionDays", "RunVersionDays", "LogRetentionDays")} \
        == {"PhotoRetentionDays": "14", "RunRetentionDays": "60", "RunVersionDays": "3", "LogRetentionDays": "30"}
    dry = tool(recorder.endpoint, "--dry-run", "deploy", "--bucket", deployed, "--log-days", "45")
    (line,) = [line for line in dry.stdout.splitlines() if line.startswith("aws cloudformation CreateStack ")]
    sent = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(line.split(" ", 3)[3])["Parameters"]}
    assert (sent["LogRetentionDays"], sent["PhotoRetentionDays"]) == ("45", "30")


def test_run_sends_a_transient_cluster_with_the_job_as_its_step(recorder, deployed, binary, hub_weights):
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
    # The stack's security configuration (IMDSv2, encryption at rest: test_deploy...), as EMR holds it.
    stack = client(recorder.endpoint, "cloudformation").describe_stacks(StackName=f"fruits-{deployed}")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert req["SecurityConfiguration"] == outputs["SecurityConfiguration"]
    (boot,) = req["BootstrapActions"]
    prefix, region = boot["ScriptBootstrapAction"]["Args"]
    assert boot["ScriptBootstrapAction"]["Path"] == prefix + "bootstrap.sh"
    assert region == "eu-west-1", "the bootstrap action copies from the bucket's region"
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
    # Tasks sized by work: minutes at the core node's rate (a g4dn.xlarge: its T4 at the table's
    # upper estimate, above its 4 vCPUs' rate).
    table = json.load(open(os.path.join(EMR, "fruits_emr", "prices.json")))
    per_s = max(table["images_per_s_per_vcpu"] * table["instances"]["g4dn.xlarge"]["vcpu"],
                table["gpu_images_per_s_upper_estimate"])
    per_task = int(args[args.index("--images-per-partition") + 1])
    assert 60 <= per_task / per_s <= 600 and per_task % 1000 == 0, (per_task, per_s)
    # The nodes cannot reach the model hub: the pinned weights went to the bucket, content-addressed.
    weights = args[args.index("--weights") + 1]
    digest = hashlib.sha256(open(hub_weights, "rb").read()).hexdigest()
    assert weights == f"s3://{deployed}/emr/weights/{digest}/mobilenetv2.safetensors"
    # The artifacts are in S3 where the bootstrap action looks, with their hashes.
    s3 = client(recorder.endpoint, "s3")
    key = prefix[len(f"s3://{deployed}/"):]
    assert s3.get_object(Bucket=deployed, Key=weights[len(f"s3://{deployed}/"):])["Body"].read() == \
        open(hub_weights, "rb").read()
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
    assert f"CUDA libraries from {os.environ['FRUITS_CUDA_WHEELS']}, as pinned" in out.stdout
    # A second cluster does not upload them, or the weights, again.
    before = len(recorder.requests())
    again = tool(recorder.endpoint, "run", "--bucket", deployed, "--input", f"s3://{deployed}/photos/fruits-360/",
                 "--output", f"s3://{deployed}/runs/run-2/", "--binary", binary, "--no-wait")
    assert again.returncode == 0, again.stderr + again.stdout
    puts = [r["path"] for r in recorder.requests()[before:] if r["method"] == "PUT"]
    assert not [p for p in puts if "/emr/cuda/" in p or "/emr/weights/" in p], puts
    assert any(p.endswith("/fruits.json") for p in puts), puts
    assert again.stdout.count("is there already") == len(wheels) + 1
    # The cluster, as EMR (moto) holds it.
    emr = client(recorder.endpoint, "emr")
    ours = [c["Id"] for c in emr.list_clusters()["Clusters"] if c["Name"] == req["Name"]]
    assert ours and all(emr.describe_cluster(ClusterId=c)["Cluster"]["SecurityConfiguration"]
                        == outputs["SecurityConfiguration"] for c in ours)


def test_up_status_down(recorder, deployed, binary, tmp_path):
    # Somebody else's cluster, named like ours but without the project's tag.
    emr = client(recorder.endpoint, "emr")
    other = emr.run_job_flow(Name="fruits-not-ours", ReleaseLabel="emr-7.13.0", JobFlowRole="r", ServiceRole="s",
                             Instances={"MasterInstanceType": "m5.xlarge", "SlaveInstanceType": "m5.xlarge",
                                        "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
                             Tags=[{"Key": "project", "Value": "vegetables"}])["JobFlowId"]
    # CPU nodes only: no CUDA wheels needed, none uploaded.
    out = tool(recorder.endpoint, "up", "--bucket", deployed, "--binary", binary, "--core-count", "1",
               "--core-type", "m5.xlarge", "--idle-timeout", "20", "--cuda-wheels", str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr + out.stdout
    (_, req, _), = [c for c in calls(recorder, "ElasticMapReduce")
                    if c[0] == "RunJobFlow" and c[1]["Name"].startswith("fruits-interactive-")]
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
    assert other not in status.stdout, "not the project's: not counted"
    down = tool(recorder.endpoint, "down")
    assert down.returncode == 0, down.stderr
    (_, term, _), = [c for c in calls(recorder, "ElasticMapReduce") if c[0] == "TerminateJobFlows"]
    assert term["JobFlowIds"] and other not in term["JobFlowIds"], term
    for cid in term["JobFlowIds"]:
        assert emr.describe_cluster(ClusterId=cid)["Cluster"]["Status"]["State"].startswith("TERMINAT")
    assert "no fruits cluster is up" in tool(recorder.endpoint, "status").stdout
    # The untagged cluster is still up: `down` stops only the project's clusters.
    assert emr.describe_cluster(ClusterId=other)["Cluster"]["Status"]["State"] == "WAITING"
    emr.terminate_job_flows(JobFlowIds=[other])


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


def test_demo_terminates_its_cluster_on_sighup_retrying_and_deaf_to_signals_meanwhile(moto, emr_proxy, binary):
    bucket = f"fruits-{int(time.time() * 1000) % 10**9}"
    assert tool(moto, "deploy", "--bucket", bucket).returncode == 0
    # The first TerminateJobFlows fails, after a while (botocore's own retries off: the tool's are tested).
    emr_proxy.refuse("TerminateJobFlows", times=1, hold_s=2)
    env = aws_env(emr_proxy.endpoint, FRUITS_EMR_PYTHON=sys.executable, FRUITS_EMR_POLL_S="0.1", AWS_MAX_ATTEMPTS="1")
    proc = subprocess.Popen([TOOL, "demo", "--bucket", bucket, "--binary", binary], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(op):
        deadline = time.time() + 180
        while op not in emr_proxy.ops():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, f"no {op}"
            time.sleep(0.05)

    wait_for("AddJobFlowSteps")
    time.sleep(0.5)
    proc.send_signal(signal.SIGHUP)  # the terminal closed
    wait_for("TerminateJobFlows")
    # While that call is under way, and between its tries: Ctrl-C, SIGTERM, SIGHUP again, all ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        time.sleep(0.3)
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stdout + stderr
    assert "interrupted (SIGHUP)" in stdout, stdout
    (cid,) = {b["JobFlowId"] for b in emr_proxy.bodies("AddJobFlowSteps")}
    assert [b["JobFlowIds"] for b in emr_proxy.bodies("TerminateJobFlows")] == [[cid], [cid]], "tried again"
    assert f"TerminateJobFlows {cid} failed" in stdout and f"terminating {cid}" in stdout, stdout
    state = client(moto, "emr").describe_cluster(ClusterId=cid)["Cluster"]["Status"]["State"]
    assert state.startswith("TERMINAT"), state


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
    # The in-transit certificate looked for first, then the CUDA wheels, the artifacts, the weights.
    assert ops == ["s3 HeadObject"] + ["s3 HeadObject", "s3 PutObject"] * 2 + ["s3 PutObject"] * 5 \
        + ["emr RunJobFlow"], ops
    assert json.loads(lines[0].split(" ", 3)[3])["Key"] == "emr/tls/in-transit.zip"
    assert "/cuda/" in json.loads(lines[1].split(" ", 3)[3])["Key"]
    assert json.loads(lines[-2].split(" ", 3)[3])["Key"] == "emr/weights/<sha256>/mobilenetv2.safetensors"
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


def test_a_gpu_cluster_without_its_cuda_wheels_is_refused_before_any_request(recorder, binary, pinned, tmp_path):
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
    shutil.copytree(pinned.wheels, partial)
    nvrtc = next(n for n in os.listdir(partial) if n.startswith("nvidia_cuda_nvrtc_cu12-"))
    (partial / nvrtc).unlink()
    out = tool(recorder.endpoint, *run, "--cuda-wheels", str(partial))
    assert out.returncode == 1
    assert f"no {nvrtc.split('-py3')[0]}-*x86_64.whl in {partial}" in out.stderr, out.stderr
    assert recorder.requests() == [], "not one request"


def test_a_cuda_wheel_that_is_not_the_pinned_one_is_refused_before_any_request(recorder, binary, pinned, tmp_path):
    # The pinned wheels, one of them changed after it was fetched.
    tampered = tmp_path / "tampered"
    shutil.copytree(pinned.wheels, tampered)
    cublas = next(n for n in os.listdir(tampered) if n.startswith("nvidia_cublas_cu12-"))
    pin = hashlib.sha256((tampered / cublas).read_bytes()).hexdigest()
    with open(tampered / cublas, "ab") as f:
        f.write(b"a payload run as root on every GPU node")
    actual = hashlib.sha256((tampered / cublas).read_bytes()).hexdigest()
    for args in (["run", "--bucket", "fruits-demo", "--input", "s3://fruits-demo/photos/x/", "--output",
                  "s3://fruits-demo/runs/r/", "--binary", binary, "--cuda-wheels", str(tampered)],
                 ["--dry-run", "up", "--bucket", "fruits-demo", "--binary", binary, "--cuda-wheels", str(tampered)]):
        out = tool(recorder.endpoint, *args)
        assert out.returncode == 1, (args, out.stdout)
        assert f"{tampered / cublas} is not the pinned nvidia-cublas-cu12==12.6.4.1: its sha256 is {actual}" \
            in out.stderr and f"pins {pin}; refused" in out.stderr, out.stderr
        assert "aws " not in out.stdout, "not even printed"
    assert recorder.requests() == [], "not one request"


# The in-transit certificate ----------------------------------------------------
TLS_KEY = "emr/tls/in-transit.zip"  # infra.yaml's security configuration names it


def tls_puts(recorder, since=0):
    return [r for r in recorder.requests()[since:]
            if r["method"] == "PUT" and r["path"].split("?")[0].endswith("/" + TLS_KEY)]


def assert_no_key_material(key_pem: bytes, *texts):
    """Not the key, nor a line of it, in what the tool said."""
    lines = [line for line in key_pem.decode().splitlines() if line and "PRIVATE KEY" not in line]
    assert len(lines) > 10
    for text in texts:
        assert "PRIVATE KEY" not in text and not any(line in text for line in lines)


def stack_outputs_of(endpoint, bucket):
    stack = client(endpoint, "cloudformation").describe_stacks(StackName=f"fruits-{bucket}")["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_deploy_puts_the_in_transit_certificate_in_the_bucket_after_the_stack(recorder):
    bucket = f"fruits-{int(time.time() * 1000) % 10**9}"
    out = tool(recorder.endpoint, "deploy", "--bucket", bucket)
    assert out.returncode == 0, out.stderr + out.stdout
    # After the stack (which makes the bucket) is complete: CreateStack, its DescribeStacks, then the upload.
    reqs = recorder.requests()
    create = next(i for i, r in enumerate(reqs) if "Action=CreateStack" in r["body"])
    described = [i for i, r in enumerate(reqs) if "Action=DescribeStacks" in r["body"]]
    (put,) = [i for i, r in enumerate(reqs) if r in tls_puts(recorder)]
    assert create < described[-1] < put == len(reqs) - 1, (create, described, put)
    # Where the security configuration looks, encrypted with the stack's key (not only by the bucket's default).
    obj = client(recorder.endpoint, "s3").get_object(Bucket=bucket, Key=TLS_KEY)
    kms = stack_outputs_of(recorder.endpoint, bucket)["KmsKey"]
    assert (obj["ServerSideEncryption"], obj["SSEKMSKeyId"]) == ("aws:kms", kms)
    # EMR's three files; the certificate's names, validity, usage; the key its own (test_tls.check_bundle).
    files = check_bundle(obj["Body"].read())
    chain = files["certificateChain.pem"]
    der = subprocess.run(["openssl", "x509", "-outform", "DER"], input=chain, capture_output=True).stdout
    end = subprocess.run(["openssl", "x509", "-noout", "-enddate"], input=chain, capture_output=True).stdout.decode()
    not_after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(" ".join(end.split("=", 1)[1].split()),
                                                                  "%b %d %H:%M:%S %Y %Z"))
    assert obj["Metadata"] == {"made-by": "fruits-emr", "names": "*.eu-west-1.compute.internal",
                               "not-after": not_after, "certificate-sha256": hashlib.sha256(der).hexdigest()}
    # Said, with its facts; the key never.
    assert f"in-transit certificate s3://{bucket}/{TLS_KEY}: made, since there is none in the bucket yet: " \
           f"*.eu-west-1.compute.internal, valid until {not_after}" in out.stdout, out.stdout
    assert_no_key_material(files["privateKey.pem"], out.stdout, out.stderr)


def test_a_redeploy_keeps_the_certificate_and_rotates_it_near_its_end_or_when_asked(recorder, deployed, binary,
                                                                                     tmp_path):
    s3 = client(recorder.endpoint, "s3")
    kms = stack_outputs_of(recorder.endpoint, deployed)["KmsKey"]
    where = f"s3://{deployed}/{TLS_KEY}"

    def current():
        obj = s3.get_object(Bucket=deployed, Key=TLS_KEY)
        return check_bundle(obj["Body"].read()), obj["Metadata"]

    first, meta = current()
    # Deploying again: the certificate is kept (a stack CloudFormation finds nothing to update in is no
    # failure either, test_tls.py: moto updates it anyway).
    before = len(recorder.requests())
    again = tool(recorder.endpoint, "deploy", "--bucket", deployed)
    assert again.returncode == 0, again.stderr + again.stdout
    assert f"in-transit certificate {where}: kept (*.eu-west-1.compute.internal, valid until {meta['not-after']}" \
        in again.stdout, again.stdout
    assert not tls_puts(recorder, before) and current()[0] == first
    # Within 30 days of its end: a new one, and why.
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 10 * 86400))
    s3.copy_object(Bucket=deployed, Key=TLS_KEY, CopySource={"Bucket": deployed, "Key": TLS_KEY},
                   MetadataDirective="REPLACE", Metadata={**meta, "not-after": soon},
                   ServerSideEncryption="aws:kms", SSEKMSKeyId=kms)
    near = tool(recorder.endpoint, "deploy", "--bucket", deployed)
    assert near.returncode == 0, near.stderr + near.stdout
    assert f"in-transit certificate {where}: rotated, since it expires {soon}, within 30 days: " in near.stdout
    second, _ = current()
    assert second["privateKey.pem"] != first["privateKey.pem"]
    assert_no_key_material(second["privateKey.pem"], near.stdout, near.stderr)
    # --rotate-tls while a project cluster is up: refused (a node EMR adds would not be trusted by the others).
    assert tool(recorder.endpoint, "down").returncode == 0  # others' tests' clusters
    up = tool(recorder.endpoint, "up", "--bucket", deployed, "--binary", binary, "--core-count", "1",
              "--core-type", "m5.xlarge", "--cuda-wheels", str(tmp_path / "none"))
    assert up.returncode == 0, up.stderr + up.stdout
    (cid,) = {c["Id"] for c in client(recorder.endpoint, "emr").list_clusters(ClusterStates=["WAITING", "RUNNING",
                                                                                             "STARTING"])["Clusters"]}
    before = len(recorder.requests())
    refused = tool(recorder.endpoint, "deploy", "--bucket", deployed, "--rotate-tls")
    assert refused.returncode == 1, refused.stdout
    assert f"not rotating {where}: cluster(s) {cid} are up with it" in refused.stderr, refused.stderr
    assert not tls_puts(recorder, before) and current()[0] == second
    # Near its end with a cluster up: kept, with a warning, and the deploy goes on.
    s3.copy_object(Bucket=deployed, Key=TLS_KEY, CopySource={"Bucket": deployed, "Key": TLS_KEY},
                   MetadataDirective="REPLACE", Metadata={**current()[1], "not-after": soon},
                   ServerSideEncryption="aws:kms", SSEKMSKeyId=kms)
    before = len(recorder.requests())
    kept = tool(recorder.endpoint, "deploy", "--bucket", deployed)
    assert kept.returncode == 0, kept.stderr + kept.stdout
    assert f"WARNING: in-transit certificate {where} kept although it expires {soon}, within 30 days: " \
           f"cluster(s) {cid} are up with it" in kept.stdout, kept.stdout
    assert not tls_puts(recorder, before)
    # None up: rotated.
    assert tool(recorder.endpoint, "down").returncode == 0
    rotated = tool(recorder.endpoint, "deploy", "--bucket", deployed, "--rotate-tls")
    assert rotated.returncode == 0, rotated.stderr + rotated.stdout
    assert f"in-transit certificate {where}: rotated, since --rotate-tls: " in rotated.stdout
    third, meta = current()
    assert third["privateKey.pem"] not in (first["privateKey.pem"], second["privateKey.pem"])
    assert meta["not-after"] != soon
    # The operator's own zip (a CA's certificate, say: no fruits-emr metadata) is theirs: kept.
    s3.put_object(Bucket=deployed, Key=TLS_KEY, Body=b"the operator's zip", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=kms)
    before = len(recorder.requests())
    own = tool(recorder.endpoint, "deploy", "--bucket", deployed)
    assert own.returncode == 0, own.stderr + own.stdout
    assert f"in-transit certificate {where}: kept (not made by fruits-emr" in own.stdout, own.stdout
    assert not tls_puts(recorder, before)
    assert s3.get_object(Bucket=deployed, Key=TLS_KEY)["Body"].read() == b"the operator's zip"


def test_a_cluster_is_not_asked_for_without_a_usable_in_transit_certificate(recorder, deployed, binary, tmp_path):
    s3 = client(recorder.endpoint, "s3")
    cpu = ["--bucket", deployed, "--binary", binary, "--core-count", "1", "--core-type", "m5.xlarge",
           "--cuda-wheels", str(tmp_path / "none")]
    s3.delete_object(Bucket=deployed, Key=TLS_KEY)
    out = tool(recorder.endpoint, "up", *cpu)
    assert out.returncode == 1, out.stdout
    assert f"no in-transit certificate at s3://{deployed}/{TLS_KEY}, which the stack's security configuration " \
           f"names: `fruits-emr deploy --bucket {deployed}` puts one there" in out.stderr, out.stderr
    assert not [c for c in calls(recorder, "ElasticMapReduce") if c[0] == "RunJobFlow"]
    # deploy puts one back; one that expires within a day is refused as well.
    back = tool(recorder.endpoint, "deploy", "--bucket", deployed)
    assert back.returncode == 0 and "made, since there is none in the bucket yet" in back.stdout, back.stdout
    meta = s3.head_object(Bucket=deployed, Key=TLS_KEY)["Metadata"]
    hour = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    s3.copy_object(Bucket=deployed, Key=TLS_KEY, CopySource={"Bucket": deployed, "Key": TLS_KEY},
                   MetadataDirective="REPLACE", Metadata={**meta, "not-after": hour})
    out = tool(recorder.endpoint, "up", *cpu)
    assert out.returncode == 1, out.stdout
    assert "has expired or expires within a day: `fruits-emr deploy" in out.stderr, out.stderr
    assert not [c for c in calls(recorder, "ElasticMapReduce") if c[0] == "RunJobFlow"]


def test_a_dry_run_deploy_shows_the_certificates_upload_and_makes_no_key(recorder, tmp_path):
    # An openssl that notes any call: a dry run must not make a key at all.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "openssl").write_text(f"#!/bin/sh\necho \"$@\" >> '{tmp_path}/openssl-calls'\nexit 1\n")
    (fake / "openssl").chmod(0o755)
    out = tool(recorder.endpoint, "--dry-run", "deploy", "--bucket", "fruits-demo",
               env_extra={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    lines = [line.split(" ", 3) for line in out.stdout.splitlines() if line.startswith("aws ")]
    assert [(s, op) for _, s, op, _ in lines] == [("cloudformation", "CreateStack"), ("s3", "HeadObject"),
                                                  ("s3", "PutObject")]
    put = json.loads(lines[-1][3])
    assert put["Key"] == TLS_KEY and put["Bucket"] == "fruits-demo"
    assert put["Body"] == "<zip of privateKey.pem, certificateChain.pem, trustedCertificates.pem: a new RSA-2048 " \
                          "key and its self-signed certificate, made here>"
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", "<KmsKey of stack fruits-fruits-demo>")
    assert put["Metadata"]["names"] == "*.eu-west-1.compute.internal"
    assert "PRIVATE KEY" not in out.stdout + out.stderr and "BEGIN" not in out.stdout + out.stderr
    assert not (tmp_path / "openssl-calls").exists(), "no key made"
    assert recorder.requests() == [], "a dry run sends nothing"


def test_run_from_shards_passes_them_to_the_driver(recorder, binary):
    out = tool(recorder.endpoint, "--dry-run", "run", "--bucket", "fruits-demo", "--shards",
               "s3://fruits-demo/photos/shards/", "--output", "s3://fruits-demo/runs/run-2/", "--binary", binary,
               "--core-type", "m5.2xlarge", "--weights", "random:0")
    assert out.returncode == 0, out.stderr
    request = json.loads([line for line in out.stdout.splitlines() if " RunJobFlow " in line][0].split(" ", 3)[3])
    args = request["Steps"][0]["HadoopJarStep"]["Args"]
    assert args[args.index("--shards") + 1] == "s3://fruits-demo/photos/shards/", args
    assert "--input" not in args and "--keys" not in args
    # Shards outside what the nodes may read: refused before any request.
    out = tool(recorder.endpoint, "run", "--bucket", "fruits-demo", "--shards", "s3://fruits-demo/shards/",
               "--output", "s3://fruits-demo/runs/r/", "--binary", binary)
    assert out.returncode == 1 and "reads s3://fruits-demo/photos/ (and runs/) only" in out.stderr
    assert recorder.requests() == []
