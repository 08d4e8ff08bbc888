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
from fruits_emr import cluster, commands, prices, regions, tls  # noqa: E402

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
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms",
                                                    "KMSMasterKeyID": {"Fn::GetAtt": ["DataKey", "Arn"]}}
    assert sse["BucketKeyEnabled"] is True
    assert t["DataKey"]["Properties"]["EnableKeyRotation"] is True
    (tls,) = t["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    (deny,) = t["DenyOutsideEurope"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"]["StringNotEquals"]["aws:RequestedRegion"] == {"Ref": "EuropeanRegions"}
    for role in ("EmrServiceRole", "NodeRole"):
        assert {"Ref": "DenyOutsideEurope"} in t[role]["Properties"]["ManagedPolicyArns"], role
    # The nodes write only under runs/ and logs/ of the project's bucket, and delete only under runs/.
    node = t["NodeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    writes = [s for s in node if "s3:PutObject" in s["Action"]]
    assert [r["Fn::Sub"] for r in writes[0]["Resource"]] == ["${Bucket.Arn}/runs/*", "${Bucket.Arn}/logs/*"]
    assert not any(s["Action"] == "*" or s.get("Resource") == "*" for s in node if s["Effect"] == "Allow")


def actions(statement):
    a = statement["Action"]
    return [a] if isinstance(a, str) else a


def resources(statement):
    r = statement["Resource"]
    return [x.get("Fn::Sub") or x for x in (r if isinstance(r, list) else [r])]


def test_the_nodes_cannot_delete_logs():
    node = template()["Resources"]["NodeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    allowed_deletes = [s for s in node if s["Effect"] == "Allow" and any("Delete" in a for a in actions(s))]
    assert [(actions(s), resources(s)) for s in allowed_deletes] == [(["s3:DeleteObject"], ["${Bucket.Arn}/runs/*"])]
    # Explicitly denied, whatever a later policy allows: deleting under logs/ or the access logs, and deleting
    # any version for good (versioning keeps what a delete or an overwrite hides).
    denied = {(a, r) for s in node if s["Effect"] == "Deny" for a in actions(s) for r in resources(s)}
    assert {("s3:DeleteObject", "${Bucket.Arn}/logs/*"), ("s3:DeleteObject", "${AccessLogBucket.Arn}/*"),
            ("s3:DeleteObjectVersion", "${Bucket.Arn}/*"), ("s3:DeleteObjectVersion", "${AccessLogBucket.Arn}/*")} \
        <= denied, denied


def test_the_bucket_is_versioned_access_logged_and_keeps_each_prefix_for_its_retention():
    t = template()
    bucket = t["Resources"]["Bucket"]["Properties"]
    # Versioning is bucket-wide (S3 has no per-prefix versioning).
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogBucket"}
    logs = t["Resources"]["AccessLogBucket"]["Properties"]
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == \
        {"SSEAlgorithm": "AES256"}, "S3 delivers access logs only to an SSE-S3 bucket"
    (delivery, tls) = t["Resources"]["AccessLogBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"} and delivery["Action"] == "s3:PutObject"
    assert delivery["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::GetAtt": ["Bucket", "Arn"]}
    assert tls["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    (expire_logs,) = logs["LifecycleConfiguration"]["Rules"]
    assert expire_logs["ExpirationInDays"] == {"Ref": "LogRetentionDays"}
    # Each prefix expires after the deployer's retention, and so do its noncurrent versions: versioning keeps
    # runs/ recoverable for RunVersionDays and an overwritten log for LogRetentionDays, and extends nothing else
    # (one day). One rule a prefix: where rules overlap, S3 applies the shortest expiration.
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    expected = {"expire-photos": ("photos/", "PhotoRetentionDays", 1),
                "expire-runs": ("runs/", "RunRetentionDays", {"Ref": "RunVersionDays"}),
                "expire-logs": ("logs/", "LogRetentionDays", {"Ref": "LogRetentionDays"}),
                "drop-old-artifact-versions": ("emr/", None, 1)}
    for rule_id, (prefix, days, noncurrent) in expected.items():
        rule = rules[rule_id]
        assert rule["Status"] == "Enabled" and rule["Prefix"] == prefix, rule
        assert rule.get("ExpirationInDays") == ({"Ref": days} if days else None), rule
        assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": noncurrent}, rule
    versioned = [r for r in rules.values() if "NoncurrentVersionExpiration" in r]
    assert sorted(r["Prefix"] for r in versioned) == ["emr/", "logs/", "photos/", "runs/"], "no overlap"
    assert rules["remove-expired-delete-markers"]["ExpiredObjectDeleteMarker"] is True
    # The retention parameters have no default in the template: fruits-emr deploy passes them, its flags'
    # defaults (commands.Retention) being the one place of the defaults.
    params = t["Parameters"]
    sent = {p["ParameterKey"] for p in commands.Retention().parameters()}
    assert sent == {k for k in params if k.endswith("Days")}
    assert all("Default" not in params[k] and params[k]["MinValue"] == 1 for k in sent)


def test_the_security_configuration_requires_imdsv2_and_encrypts_at_rest_with_the_key():
    t = template()["Resources"]
    sc = t["SecurityConfiguration"]["Properties"]["SecurityConfiguration"]
    assert sc["InstanceMetadataServiceConfiguration"] == {"MinimumInstanceMetadataServiceVersion": 2,
                                                          "HttpPutResponseHopLimit": 1}
    enc = sc["EncryptionConfiguration"]
    key = {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert enc["EnableAtRestEncryption"] is True
    assert enc["AtRestEncryptionConfiguration"] == {
        "S3EncryptionConfiguration": {"EncryptionMode": "SSE-KMS", "AwsKmsKey": key},
        "LocalDiskEncryptionConfiguration": {"EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": key,
                                             "EnableEbsEncryption": True}}
    # In transit: EMR's PEM provider, the zip `fruits-emr deploy` puts in the stack's bucket (tls.KEY; what it
    # holds: test_tls.py, test_tool_moto.py), under emr/, which the nodes' role reads.
    assert enc["EnableInTransitEncryption"] is True
    assert enc["InTransitEncryptionConfiguration"] == {"TLSCertificateConfiguration": {
        "CertificateProviderType": "PEM", "S3Object": {"Fn::Sub": f"s3://${{Bucket}}/{tls.KEY}"}}}
    assert tls.KEY.startswith("emr/")
    # A security configuration cannot change in place, nor a named resource be replaced: a new name.
    assert t["SecurityConfiguration"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-2"}
    # The roles may use the key: the nodes for S3 (the certificate's zip too) and their disks, EMR for the
    # volumes it creates.
    node = t["NodeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    (reads,) = [s for s in node if s["Effect"] == "Allow" and actions(s) == ["s3:GetObject"]]
    assert "${Bucket.Arn}/emr/*" in resources(reads)
    (kms,) = [s for s in node if any(a.startswith("kms:") for a in actions(s))]
    assert kms["Resource"] == key and {"kms:Decrypt", "kms:GenerateDataKey"} <= set(actions(kms))
    service = {p["PolicyName"]: p for p in t["EmrServiceRole"]["Properties"]["Policies"]}
    grants = service["encrypt-node-volumes"]["PolicyDocument"]["Statement"][1]
    assert grants["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}} and grants["Resource"] == key


def test_the_nodes_are_in_a_private_subnet_reaching_only_s3_and_kms():
    t = template()["Resources"]
    types = {name: r["Type"] for name, r in t.items()}
    assert "AWS::EC2::InternetGateway" not in types.values() and "AWS::EC2::NatGateway" not in types.values()
    assert "AWS::EC2::Route" not in types.values(), "no route but the S3 endpoint's"
    assert t["Subnet"]["Properties"]["MapPublicIpOnLaunch"] is False
    endpoints = {r["Properties"]["ServiceName"]["Fn::Sub"]: r["Properties"] for r in t.values()
                 if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert endpoints.keys() == {"com.amazonaws.${AWS::Region}.s3", "com.amazonaws.${AWS::Region}.kms"}
    s3 = endpoints["com.amazonaws.${AWS::Region}.s3"]
    assert s3["VpcEndpointType"] == "Gateway" and s3["RouteTableIds"] == [{"Ref": "RouteTable"}]
    kms = endpoints["com.amazonaws.${AWS::Region}.kms"]
    assert kms["VpcEndpointType"] == "Interface" and kms["SubnetIds"] == [{"Ref": "Subnet"}]
    assert kms["PrivateDnsEnabled"] is True
    (ingress,) = t["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"], ingress["CidrIp"]) == \
        (443, 443, t["Vpc"]["Properties"]["CidrBlock"]), "HTTPS from the VPC only"


ARNS = {"Bucket": "arn:aws:s3:::fruits-demo", "AccessLogBucket": "arn:aws:s3:::fruits-demo-logs",
        "DataKey": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "NodeRole": "arn:aws:iam::123456789012:role/fruits-node"}


def iam_policies():
    """Every policy document of the template, with its name, for parliament
    (intrinsic functions replaced by plausible ARNs)."""
    def concrete(node):
        if isinstance(node, dict):
            if "Fn::Sub" in node:
                text = node["Fn::Sub"].replace("${AWS::Partition}", "aws").replace("${Bucket}", "fruits-demo")
                for name, arn in ARNS.items():
                    text = text.replace("${" + name + ".Arn}", arn)
                return text
            if "Fn::GetAtt" in node:
                return ARNS[node["Fn::GetAtt"][0]]
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
    roles = {"ServiceRole": "s", "InstanceProfile": "p", "SubnetId": "subnet-1", "SecurityConfiguration": "sc"}
    req = cluster.run_job_flow(bucket="b", region="eu-west-1", roles=roles, artifact="a", purpose="run",
                               shape=cluster.Shape(), keep_alive=False)
    assert req["ReleaseLabel"].startswith("emr-7.")
    assert req["SecurityConfiguration"] == "sc" and req["Instances"]["Ec2SubnetId"] == "subnet-1"
    assert req["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == ["s3://b/emr/a/", "eu-west-1"]
    assert cluster.project_tag() in req["Tags"] and cluster.project_tag() == {"Key": "project", "Value": "fruits"}
    assert req["AutoTerminationPolicy"]["IdleTimeout"] == 30 * 60
    assert "Ec2KeyName" not in req["Instances"]
    assert all(isinstance(v, str) for c in req["Configurations"] for v in c["Properties"].values())
    spot = cluster.run_job_flow(bucket="b", region="eu-west-1", roles=roles, artifact="a", purpose="run",
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
