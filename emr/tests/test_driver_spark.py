"""The PySpark driver for real: spark-submit to a standalone cluster on
127.0.0.1 (a master, two one-core workers), the real `fruits` binary on
every executor, photos and results in a local S3-compatible server."""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pyarrow.parquet as pq
from conftest import EMR, REPO, aws_env, helper, spark_env, spark_home

SAMPLE = os.path.join(REPO, "tests", "data", "fruits-360-sample")


def submit(cluster, endpoint, args, timeout=600):
    """spark-submit of emr/fruits_emr/featurize_job.py; executors get the S3 settings
    explicitly, as spark.executorEnv (on EMR they come from the node role)."""
    env = spark_env()
    env.update(aws_env(endpoint))
    conf = []
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED"):
        conf += ["--conf", f"spark.executorEnv.{k}={env[k]}"]
    cmd = [os.path.join(spark_home(), "bin", "spark-submit"), "--master", cluster.master,
           "--conf", "spark.ui.enabled=false", "--conf", "spark.task.maxFailures=4"] + conf
    cmd += [os.path.join(EMR, "fruits_emr", "featurize_job.py")] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def s3_json(endpoint, bucket, key):
    return json.loads(helper(endpoint, "cat", bucket, key))


def rows_paths(endpoint, bucket, prefix, parts, tmp_path):
    """Every row's path in the committed parts under `prefix`, read by pyarrow."""
    paths = []
    for n in parts:
        m = s3_json(endpoint, bucket, f"{prefix}_fruits/part-{n:05d}.manifest.json")
        rows = next(f for f in m["files"] if f["role"] == "rows")
        local = tmp_path / f"{prefix.replace('/', '_')}{n}.parquet"
        helper(endpoint, "get", bucket, prefix + rows["name"], str(local))
        paths += pq.read_table(local).column("path").to_pylist()
    return paths


def manifests(endpoint, bucket, prefix):
    keys = helper(endpoint, "keys", bucket, prefix + "_fruits/").split()
    return sorted(int(re.search(r"part-(\d+)\.manifest\.json$", k).group(1)) for k in keys
                  if k.endswith(".manifest.json"))


def weights_in_s3(fruits_bin, endpoint, tmp_path, seed):
    w = tmp_path / "w.safetensors"
    subprocess.run([fruits_bin, "weights", "init", "--model", "mobilenetv2", "--seed", str(seed), "--out", str(w)],
                   check=True, capture_output=True)
    helper(endpoint, "put", "results", "weights/w.safetensors", str(w))
    return w


def test_driver_on_a_standalone_cluster_from_s3_to_s3(spark_cluster, moto, fruits_bin, tmp_path):
    helper(moto, "bucket", "photos", "eu-west-1")
    helper(moto, "bucket", "results", "eu-central-1")  # another region: each bucket in its own
    helper(moto, "upload", SAMPLE, "photos", "fruits-360/")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "notes.txt").write_text("not a photo")
    (tmp_path / "extra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    helper(moto, "upload", str(tmp_path / "extra"), "photos", "fruits-360/Training/Kiwi/")
    w = weights_in_s3(fruits_bin, moto, tmp_path, 4)

    out = submit(spark_cluster, moto, [
        "--input", "s3://photos/fruits-360/", "--output", "s3://results/run-1/",
        "--weights", "s3://results/weights/w.safetensors", "--fruits", fruits_bin,
        "--stage-dir", f"file://{tmp_path}/stage", "--partitions", "4", "--k", "3", "--max-rejected", "0.5",
        "--region", "eu-west-1"])
    assert out.returncode == 0, out.stderr[-6000:]
    assert "report: s3://results/run-1/run.json" in out.stdout, out.stdout

    report = s3_json(moto, "results", "run-1/run.json")
    assert report["images"] == {"inputs": 20, "featurised": 19, "rejected": 1, "not_images": 1, "duplicates": 0}
    assert report["parts"]["done"] == 4
    # Every image exactly once, in four committed parts, read back by pyarrow.
    assert manifests(moto, "results", "run-1/features/") == [0, 1, 2, 3]
    paths = rows_paths(moto, "results", "run-1/features/", range(4), tmp_path)
    sample = sorted("s3://photos/fruits-360/" + os.path.relpath(os.path.join(d, f), SAMPLE)
                    for d, _, fs in os.walk(SAMPLE) for f in fs)
    assert sorted(paths) == sample
    # The summaries: one per partition, each saying where and on what it ran.
    assert sorted(p["part"] for p in report["partitions"]) == [0, 1, 2, 3]
    for p in report["partitions"]:
        assert p["status"] == "done" and p["device"].startswith("cpu") and p["host"] and p["seconds"] > 0
    # PCA fitted on the driver from the statistics, reduced per partition.
    pca = s3_json(moto, "results", "run-1/pca/pca.json")
    assert pca["n_samples"] == 19 and pca["n_components"] == 3
    assert manifests(moto, "results", "run-1/reduced/") == [0, 1, 2, 3]
    assert len(rows_paths(moto, "results", "run-1/reduced/", range(4), tmp_path)) == 19
    # The weights: staged once (named by their sha256), and each executor read
    # its own copy in its own work directory, never the staged file itself.
    digest = report["weights"]["sha256"]
    staged = tmp_path / "stage" / f"{digest}.safetensors"
    assert staged.read_bytes() == w.read_bytes()
    copies = report["weights"]["executor_copies"]
    assert len(copies) == 2, copies
    for p in report["partitions"]:
        assert any(p["weights_path"].startswith(d) for d in spark_cluster.worker_dirs), p["weights_path"]
        assert p["weights_path"] != str(staged)
    # (spark-submit merges the Python driver's stderr into its stdout)
    assert "staged once at file://" in out.stdout
    assert "cost" not in report, "no price given, no cost claimed"

    # --resume into the same output: the same run, every part found complete.
    again = submit(spark_cluster, moto, [
        "--input", "s3://photos/fruits-360/", "--output", "s3://results/run-1/",
        "--weights", "s3://results/weights/w.safetensors", "--fruits", fruits_bin,
        "--stage-dir", f"file://{tmp_path}/stage", "--partitions", "4", "--k", "3", "--max-rejected", "0.5",
        "--region", "eu-west-1", "--resume"])
    assert again.returncode == 0, again.stderr[-6000:]
    resumed = s3_json(moto, "results", "run-1/run.json")
    assert resumed["parts"] == {"total": 4, "done": 0, "skipped": 4, "too_many_rejected": []}
    assert resumed["images"] == report["images"], "totals from the parts' manifests"
    assert [p["attempt"] for p in resumed["partitions"]] == [p["attempt"] for p in report["partitions"]]


def kill_first_attempt(part, killed):
    """Kills (SIGKILL) the first `fruits featurize` process of `part` seen."""
    needle = ["featurize", "--part-id", str(part)]
    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if all(n in argv for n in needle) and argv[argv.index("--part-id") + 1] == str(part):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.005)


def test_a_killed_attempt_is_retried_and_every_image_is_written_once(spark_cluster, moto, fruits_bin, tmp_path):
    helper(moto, "bucket", "photos2", "eu-west-1")
    jpg = os.path.join(SAMPLE, "Training", "Orange", "0_100.jpg")
    helper(moto, "many", "photos2", "many/Orange/", "300", jpg)
    killed = []
    killer = threading.Thread(target=kill_first_attempt, args=(1, killed), daemon=True)
    killer.start()
    out = submit(spark_cluster, moto, [
        "--input", "s3://photos2/many/", "--output", "s3://photos2/runs/retry/", "--weights", "random:6",
        "--fruits", fruits_bin, "--stage-dir", f"file://{tmp_path}/stage", "--partitions", "2", "--k", "2"])
    killer.join(timeout=5)
    assert out.returncode == 0, out.stderr[-6000:]
    assert killed, "the first attempt of part 1 was never seen running"
    report = s3_json(moto, "photos2", "runs/retry/run.json")
    p1 = next(p for p in report["partitions"] if p["part"] == 1)
    assert p1["task_attempt"] >= 1, "part 1 came from a retry"
    paths = rows_paths(moto, "photos2", "runs/retry/features/", [0, 1], tmp_path)
    assert len(paths) == 300 and len(set(paths)) == 300
    assert report["images"]["featurised"] == 300
    # The killed attempt's files, if it had put any, were cleaned after the job.
    keys = helper(moto, "keys", "photos2", "runs/retry/features/").split()
    named = set()
    for n in (0, 1):
        m = s3_json(moto, "photos2", f"runs/retry/features/_fruits/part-{n:05d}.manifest.json")
        named |= {"runs/retry/features/" + f["name"] for f in m["files"]}
        named.add(f"runs/retry/features/_fruits/part-{n:05d}.manifest.json")
    assert set(keys) == named, set(keys) - named
