"""The infrastructure in files, checked: the CloudFormation template by
cfn-lint and by what it must say, its IAM policies by parliament, every
shell script by shellcheck, and the cluster definition, price table and
region list by what the tool relies on."""

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import EMR, REPO

sys.path.insert(0, EMR)
from fruits_emr import cluster, prices, regions  # noqa: E402

BIN = os.path.dirname(sys.executable)


def template():
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(os.path.join(EMR, "fruits_emr", "infra.yaml"))


def test_cfn_lint_passes():
    out = subprocess.run([os.path.join(BIN, "cfn-lint"), os.path.join(EMR, "fruits_emr", "infra.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_template_keeps_the_bucket_private_and_the_roles_in_europe():
    t = template()["Resources"]
    bucket = t["Bucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
        "SSEAlgorithm"] == "AES256"
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-logs"]["Prefix"] == "logs/"
    (tls,) = t["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    (deny,) = t["DenyOutsideEurope"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"]["StringNotEquals"]["aws:RequestedRegion"] == {"Ref": "EuropeanRegions"}
    for role in ("EmrServiceRole", "NodeRole"):
        assert {"Ref": "DenyOutsideEurope"} in t[role]["Properties"]["ManagedPolicyArns"], role
    # The nodes write only under runs/ and logs/ of the project's bucket.
    node = t["NodeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    writes = [s for s in node if "s3:PutObject" in s["Action"]]
    assert [r["Fn::Sub"] for r in writes[0]["Resource"]] == ["${Bucket.Arn}/runs/*", "${Bucket.Arn}/logs/*"]
    assert not any(s["Action"] == "*" or s.get("Resource") == "*" for s in node if s["Effect"] == "Allow")


def iam_policies():
    """Every policy document of the template, with its name, for parliament
    (intrinsic functions replaced by plausible ARNs)."""
    def concrete(node):
        if isinstance(node, dict):
            if "Fn::Sub" in node:
                return node["Fn::Sub"].replace("${Bucket.Arn}", "arn:aws:s3:::fruits-demo").replace(
                    "${Bucket}", "fruits-demo").replace("${AWS::Partition}", "aws")
            if "Fn::GetAtt" in node:
                return "arn:aws:s3:::fruits-demo" if node["Fn::GetAtt"][0] == "Bucket" else \
                    "arn:aws:iam::123456789012:role/fruits-node"
            if "Ref" in node:
                return ["eu-west-1", "eu-central-1"] if node["Ref"] == "EuropeanRegions" else "x"
            return {k: concrete(v) for k, v in node.items()}
        if isinstance(node, list):
            return [concrete(v) for v in node]
        return node

    out = []
    for name, res in template()["Resources"].items():
        props = res.get("Properties", {})
        if "PolicyDocument" in props and res["Type"] != "AWS::S3::BucketPolicy":
            out.append((name, concrete(props["PolicyDocument"])))
        for p in props.get("Policies", []):
            out.append((f"{name}/{p['PolicyName']}", concrete(p["PolicyDocument"])))
    return out


def test_parliament_finds_nothing_in_the_iam_policies():
    from parliament import analyze_policy_string

    policies = iam_policies()
    assert len(policies) >= 3
    for name, doc in policies:
        findings = analyze_policy_string(json.dumps(doc)).findings
        assert not findings, f"{name}: {[(f.issue, f.detail) for f in findings]}"


def test_shellcheck_passes_on_every_script():
    scripts = [os.path.join(EMR, "fruits_emr", "bootstrap.sh"), os.path.join(EMR, "fruits-emr"),
               os.path.join(REPO, ".ci", "run"), os.path.join(EMR, "fetch_cuda_wheels.sh")]
    scripts += glob.glob(os.path.join(REPO, "benches", "**", "*.sh"), recursive=True)
    out = subprocess.run([os.path.join(BIN, "shellcheck"), "-x"] + scripts, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(scripts) >= 6


def test_the_cluster_definition_is_transient_or_idle_terminating_and_has_no_ssh():
    roles = {"ServiceRole": "s", "InstanceProfile": "p", "SubnetId": "subnet-1"}
    req = cluster.run_job_flow(bucket="b", roles=roles, artifact="a", purpose="run", shape=cluster.Shape(),
                               keep_alive=False)
    assert req["ReleaseLabel"].startswith("emr-7.")
    assert req["AutoTerminationPolicy"]["IdleTimeout"] == 30 * 60
    assert "Ec2KeyName" not in req["Instances"]
    assert all(isinstance(v, str) for c in req["Configurations"] for v in c["Properties"].values())
    spot = cluster.run_job_flow(bucket="b", roles=roles, artifact="a", purpose="run",
                                shape=cluster.Shape(spot=True), keep_alive=True)
    assert spot["Instances"]["InstanceGroups"][1]["Market"] == "SPOT"
    assert spot["Instances"]["InstanceGroups"][0]["Market"] == "ON_DEMAND", "the master stays on demand"


def test_prices_are_dated_sourced_and_cover_the_default_cluster():
    t = prices.table()
    assert t["as_of"] and "aws.amazon.com" in t["source"]
    e = prices.estimate(t, "eu-west-1", "m5.xlarge", "g4dn.xlarge", 2, images=100000)
    assert e["per_hour_usd"] == round(t["regions"]["eu-west-1"]["m5.xlarge"]["ec2"]
                                      + t["regions"]["eu-west-1"]["m5.xlarge"]["emr"]
                                      + 2 * (t["regions"]["eu-west-1"]["g4dn.xlarge"]["ec2"]
                                             + t["regions"]["eu-west-1"]["g4dn.xlarge"]["emr"]), 3)
    assert e["run_seconds"] > t["cluster_start_s"] and e["run_usd"] > 0
    with pytest.raises(KeyError):
        prices.hourly(t, "us-east-1", "m5.xlarge")


def test_the_tool_reads_the_binarys_region_list(fruits_bin, tmp_path):
    binary = json.loads(subprocess.run([fruits_bin, "regions", "--json"], capture_output=True, text=True).stdout)
    europe = regions.of_binary(fruits_bin)
    assert list(europe.codes) == [r["code"] for r in binary["regions"]]
    assert europe.default == binary["default"] == "eu-west-1"
    assert europe.check("eu-central-2") == "eu-central-2"
    with pytest.raises(regions.RegionRefused):
        europe.check("us-east-1")
    # Something that is not fruits is named, not trusted.
    liar = tmp_path / "fruits"
    liar.write_text("#!/bin/sh\necho 'not json'\n")
    liar.chmod(0o755)
    with pytest.raises(FileNotFoundError, match="is it a fruits binary"):
        regions.of_binary(str(liar))
    with pytest.raises(FileNotFoundError, match="cannot run the fruits binary"):
        regions.of_binary(str(tmp_path / "missing"))
