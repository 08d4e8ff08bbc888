"""fruits-emr as users install it (`pip install ./emr`), run from a folder
outside any clone: its entry point, its data files (driver, bootstrap,
templates, prices, CUDA pins) and the regions of the binary it is given,
in a dry run (sends nothing)."""

import json
import os
import shutil
import subprocess
import sys

from conftest import EMR, fake_cuda_wheels


def test_the_installed_package_runs_outside_the_clone(tmp_path, fruits_bin):
    site = tmp_path / "site"
    # A copy, as a user's unpacked source would be (setuptools builds in
    # the source folder); no index, no build isolation: the test venv's
    # setuptools builds it.
    source = tmp_path / "emr"
    shutil.copytree(EMR, source, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(source)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    tool = site / "bin" / "fruits-emr"
    assert tool.is_file(), sorted(os.listdir(site))
    for name in ("featurize_job.py", "bootstrap.sh", "cluster.json", "infra.yaml", "prices.json", "cuda_libs.txt"):
        assert (site / "fruits_emr" / name).is_file(), name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fake_cuda_wheels(tmp_path / "cuda-wheels")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(site), "FRUITS_BIN": fruits_bin,
           "FRUITS_CUDA_WHEELS": str(tmp_path / "cuda-wheels"), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}

    def run(*args):
        out = subprocess.run([str(tool), "--dry-run", *args], capture_output=True, text=True, env=env,
                             cwd=elsewhere, timeout=120)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return [line.split(" ", 3) for line in out.stdout.splitlines() if line.startswith("aws ")]

    where = subprocess.run([sys.executable, "-c", "import fruits_emr.files as f; print(f.__file__, f.checkout())"],
                           capture_output=True, text=True, env=env, cwd=elsewhere).stdout.split()
    assert where == [str(site / "fruits_emr" / "files.py"), "None"], where

    (_, _, op, body), head, put = run("deploy", "--bucket", "fruits-demo")
    request = json.loads(body)
    assert op == "CreateStack" and "AWS::S3::Bucket" in request["TemplateBody"]
    # Then the in-transit certificate, where the template's security configuration names it (tls.py ships).
    assert [head[2], put[2]] == ["HeadObject", "PutObject"]
    assert json.loads(put[3])["Key"] == "emr/tls/in-transit.zip" and "s3://${Bucket}/emr/tls/in-transit.zip" \
        in request["TemplateBody"]
    regions = json.loads(subprocess.run([fruits_bin, "regions", "--json"], capture_output=True, text=True).stdout)
    sent = {p["ParameterKey"]: p["ParameterValue"] for p in request["Parameters"]}
    assert sent["EuropeanRegions"].split(",") == [r["code"] for r in regions["regions"]]

    calls = run("demo", "--bucket", "fruits-demo", "--core-type", "m5.2xlarge")
    keys = [json.loads(body)["Key"] for _, service, op, body in calls if op == "PutObject"]
    photos = [k for k in keys if k.startswith("photos/demo-sample/")]
    assert len(photos) == 19, keys  # the binary's own sample
    artifact = {k.rsplit("/", 1)[1] for k in keys if k.startswith("emr/") and not k.startswith("emr/weights/")}
    assert artifact == {"fruits", "featurize_job.py", "bootstrap.sh", "fruits.json"}, artifact
    assert [op for _, _, op, _ in calls][-1] == "TerminateJobFlows"
