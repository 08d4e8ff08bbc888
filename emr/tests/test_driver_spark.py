"""The PySpark driver for real: spark-submit to a standalone cluster on
127.0.0.1 (a master, two one-core workers), the real `fruits` binary on
every executor, photos and results in a local S3-compatible server."""

import json
import math
import os
import re
import signal
import subprocess
import threading
import time

import pyarrow.parquet as pq
from conftest import EMR, REPO, aws_env, helper, recording_fruits, spark_env, spark_home
from fruits_emr import featurize_job as job

SAMPLE = os.path.join(REPO, "tests", "data", "fruits-360-sample")


def submit(cluster, endpoint, args, timeout=600, extra_conf=()):
    """spark-submit of emr/fruits_emr/featurize_job.py; executors get the S3 settings
    explicitly, as spark.executorEnv (on EMR they come from the node role)."""
    env = spark_env()
    env.update(aws_env(endpoint))
    conf = [c for kv in extra_conf for c in ("--conf", kv)]
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
        "--stage-dir", f"file://{tmp_path}/stage", "--partitions", "5", "--k", "3", "--max-rejected", "0.5",
        "--region", "eu-west-1", "--merge-fan-in", "2"])
    assert out.returncode == 0, out.stderr[-6000:]
    assert "report: s3://results/run-1/run.json" in out.stdout, out.stdout

    report = s3_json(moto, "results", "run-1/run.json")
    assert report["images"] == {"inputs": 20, "featurised": 19, "rejected": 1, "not_images": 1, "duplicates": 0}
    assert report["parts"]["done"] == 5
    # Every image exactly once, in five committed parts, read back by pyarrow.
    assert manifests(moto, "results", "run-1/features/") == [0, 1, 2, 3, 4]
    paths = rows_paths(moto, "results", "run-1/features/", range(5), tmp_path)
    sample = sorted("s3://photos/fruits-360/" + os.path.relpath(os.path.join(d, f), SAMPLE)
                    for d, _, fs in os.walk(SAMPLE) for f in fs)
    assert sorted(paths) == sample
    # The summaries: one per partition, each saying where and on what it ran.
    assert sorted(p["part"] for p in report["partitions"]) == [0, 1, 2, 3, 4]
    for p in report["partitions"]:
        assert p["status"] == "done" and p["device"].startswith("cpu") and p["host"] and p["seconds"] > 0
    # The parts' statistics merged by tasks two at a time (5 -> 3 -> 2 files),
    # the PCA fitted on the driver from the last 2, reduced per partition.
    assert report["pca_merge"] == {"levels": 2, "fan_in": 2, "files_fitted": 2}, report["pca_merge"]
    pca = s3_json(moto, "results", "run-1/pca/pca.json")
    assert pca["n_samples"] == 19 and pca["n_components"] == 3 and pca["parts"] == ["parts 0-4"], pca
    assert manifests(moto, "results", "run-1/reduced/") == [0, 1, 2, 3, 4]
    assert len(rows_paths(moto, "results", "run-1/reduced/", range(5), tmp_path)) == 19
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
        "--stage-dir", f"file://{tmp_path}/stage", "--partitions", "5", "--k", "3", "--max-rejected", "0.5",
        "--region", "eu-west-1", "--merge-fan-in", "2", "--resume"])
    assert again.returncode == 0, again.stderr[-6000:]
    resumed = s3_json(moto, "results", "run-1/run.json")
    assert resumed["parts"] == {"total": 5, "done": 0, "skipped": 5, "too_many_rejected": []}
    assert resumed["images"] == report["images"], "totals from the parts' manifests"
    assert [p["attempt"] for p in resumed["partitions"]] == [p["attempt"] for p in report["partitions"]]


def kill_first_attempt(part, killed, worker_dirs, exe=None):
    """Kills (SIGKILL) the first `fruits featurize` process of `part` seen
    that reads its weights from one of `worker_dirs` (an executor of this
    test's cluster, not of another test run on the machine); with `exe`, the
    first one running that binary."""
    needle = ["featurize", "--part-id", str(part)]

    def ours(argv):
        return (all(n in argv for n in needle + ["--weights"]) and argv[argv.index("--part-id") + 1] == str(part)
                and argv[argv.index("--weights") + 1].startswith(tuple(d + "/" for d in worker_dirs)))

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
            if ours(argv):
                try:
                    if exe and os.readlink(f"/proc/{pid}/exe") != exe:
                        continue
                except OSError:
                    continue
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.005)


def test_a_killed_attempt_is_retried_and_every_image_is_written_once(spark_cluster, moto, fruits_bin, tmp_path):
    helper(moto, "bucket", "photos2", "eu-west-1")
    jpg = os.path.join(SAMPLE, "Training", "Orange", "0_100.jpg")
    helper(moto, "many", "photos2", "many/Orange/", "300", jpg)
    killed = []
    killer = threading.Thread(target=kill_first_attempt, args=(1, killed, spark_cluster.worker_dirs), daemon=True)
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


def command(args):
    """The subcommand of a `fruits` command line: what follows its global flags."""
    while args and args[0].startswith("--"):
        args = args[2:]
    return args[0]


def spark_events(folder):
    """The events of the one application logged in `folder` (spark.eventLog)."""
    (name,) = [n for n in os.listdir(folder) if not n.startswith(".")]
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_the_driver_plans_whole_shards_and_featurises_every_photo_once(spark_cluster, moto, fruits_bin, tmp_path):
    helper(moto, "bucket", "packed", "eu-west-1")
    helper(moto, "upload", SAMPLE, "packed", "fruits-360/")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "notes.txt").write_text("not a photo")
    (tmp_path / "extra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    helper(moto, "upload", str(tmp_path / "extra"), "packed", "fruits-360/Training/Kiwi/")
    env = aws_env(moto)
    s3 = ["--region", "eu-west-1"]
    # 20 photos (notes.txt is no photo: pack counts it and leaves it out) in 5 shards of 4.
    subprocess.run([fruits_bin, "pack", "--input", "s3://packed/fruits-360/", "--output", "s3://packed/shards/",
                    "--shard-rows", "4"] + s3, check=True, capture_output=True, env=env)
    listed = subprocess.run([fruits_bin, "parts", "list", "s3://packed/shards/"] + s3, check=True,
                            capture_output=True, text=True, env=env).stdout
    shards = job.shard_lines(listed)
    assert [sh.rows for sh in shards] == [4] * 5
    locations = [sh.location for sh in shards]
    # 8 photos a task (under 20 / 2 task slots): whole shards, two, two and one.
    planned = job.plan_shards(shards, 8, 2)
    assert planned == [locations[0:2], locations[2:4], locations[4:5]]

    fruits, calls = recording_fruits(fruits_bin, tmp_path / "calls")
    events = tmp_path / "events"
    events.mkdir()
    killed = []
    killer = threading.Thread(target=kill_first_attempt, daemon=True,
                              args=(1, killed, spark_cluster.worker_dirs, os.path.realpath(fruits_bin)))
    killer.start()
    out = submit(spark_cluster, moto, [
        "--shards", "s3://packed/shards/", "--output", "s3://packed/runs/from-shards/", "--weights", "random:5",
        "--fruits", fruits, "--stage-dir", f"file://{tmp_path}/stage", "--images-per-partition", "8",
        "--k", "3", "--max-rejected", "0.5"] + s3,
        extra_conf=["spark.eventLog.enabled=true", f"spark.eventLog.dir=file://{events}"])
    killer.join(timeout=5)
    assert out.returncode == 0, out.stderr[-6000:]
    assert killed, "the first attempt of part 1 was never seen running"

    report = s3_json(moto, "packed", "runs/from-shards/run.json")
    assert report["images"] == {"inputs": 20, "featurised": 19, "rejected": 1, "not_images": 0, "duplicates": 0}
    assert report["shards"] == 5
    assert report["parts"] == {"total": 3, "done": 3, "skipped": 0, "too_many_rejected": []}
    assert [(p["part"], p["shard_files"], p["keys"]) for p in report["partitions"]] == [
        (i, g, 0) for i, g in enumerate(planned)]
    assert next(p for p in report["partitions"] if p["part"] == 1)["task_attempt"] >= 1, "part 1 from a retry"
    assert "5 shards of 20 photos in 3 partitions of whole shards" in out.stdout
    assert "19 of 20 images from 5 shards featurised" in out.stdout

    # One Spark task per planned partition, and each featurize (its attempts) got its own shards' locations
    # on stdin, no photo key; the shards were listed by `fruits parts list`, never photo by photo.
    stages = [e["Stage Info"] for e in spark_events(events) if e["Event"] == "SparkListenerStageCompleted"]
    featurize_stage = min(stages, key=lambda st: st["Stage ID"])
    assert featurize_stage["Number of Tasks"] == len(planned) == 3
    runs = [c for c in calls() if "featurize" in c["args"]]
    assert sorted({int(c["args"][c["args"].index("--part-id") + 1]) for c in runs}) == [0, 1, 2]
    assert len(runs) == len(planned) + len(killed)
    for c in runs:
        part = int(c["args"][c["args"].index("--part-id") + 1])
        assert c["stdin"] == planned[part], c
    commands = [command(c["args"]) for c in calls()]
    assert "list" not in commands and commands.count("parts") == 1 + 2, commands  # parts list, 2 x parts clean

    # Every photo once, each row bit-equal to featurising the loose photos (a local run, pyarrow).
    assert manifests(moto, "packed", "runs/from-shards/features/") == [0, 1, 2]
    paths = rows_paths(moto, "packed", "runs/from-shards/features/", range(3), tmp_path)
    sample = sorted("s3://packed/fruits-360/" + os.path.relpath(os.path.join(d, f), SAMPLE)
                    for d, _, fs in os.walk(SAMPLE) for f in fs)
    assert sorted(paths) == sample
    loose = tmp_path / "loose"
    subprocess.run([fruits_bin, "featurize", "--input", "s3://packed/fruits-360/", "--output", str(loose / "features"),
                    "--weights", "random:5", "--max-rejected", "0.5", "--quiet"] + s3,
                   check=True, capture_output=True, env=env)
    subprocess.run([fruits_bin, "pca", "fit", "--features", str(loose / "features"), "--k", "3",
                    "--output", str(loose / "pca")], check=True, capture_output=True)

    def by_path(tables):
        rows = [r for t in tables for r in t.to_pylist()]
        assert len(rows) == len({r["path"] for r in rows})
        return {r["path"]: r for r in rows}

    cluster_tables = []
    for n in range(3):
        m = s3_json(moto, "packed", f"runs/from-shards/features/_fruits/part-{n:05d}.manifest.json")
        name = next(f["name"] for f in m["files"] if f["role"] == "rows")
        helper(moto, "get", "packed", "runs/from-shards/features/" + name, str(tmp_path / f"shards-{n}.parquet"))
        cluster_tables.append(pq.read_table(tmp_path / f"shards-{n}.parquet"))
    (local_rows,) = [f for f in os.listdir(loose / "features") if f.endswith(".parquet")]
    assert by_path(cluster_tables) == by_path([pq.read_table(loose / "features" / local_rows)])

    # The PCA equals the loose photos' (merged from 3 parts' statistics instead of 1: to rounding).
    pca = s3_json(moto, "packed", "runs/from-shards/pca/pca.json")
    local_pca = json.load(open(loose / "pca" / "pca.json"))
    assert (pca["n_samples"], pca["n_components"]) == (local_pca["n_samples"], local_pca["n_components"]) == (19, 3)
    for key in ("explained_variance", "explained_variance_ratio"):
        for a, b in zip(pca[key], local_pca[key], strict=True):
            assert math.isclose(a, b, rel_tol=1e-9), (key, a, b)
    helper(moto, "get", "packed", "runs/from-shards/pca/components.parquet", str(tmp_path / "components.parquet"))
    for a, b in zip(pq.read_table(tmp_path / "components.parquet").column("vector").to_pylist(),
                    pq.read_table(loose / "pca" / "components.parquet").column("vector").to_pylist(), strict=True):
        sign = 1.0 if sum(x * y for x, y in zip(a, b, strict=True)) > 0 else -1.0
        assert max(abs(x - sign * y) for x, y in zip(a, b, strict=True)) < 1e-9
    assert manifests(moto, "packed", "runs/from-shards/reduced/") == [0, 1, 2]
    assert len(rows_paths(moto, "packed", "runs/from-shards/reduced/", range(3), tmp_path)) == 19
    # The killed attempt's files, if it had put any, were cleaned after the job.
    keys = helper(moto, "keys", "packed", "runs/from-shards/features/").split()
    named = set()
    for n in range(3):
        m = s3_json(moto, "packed", f"runs/from-shards/features/_fruits/part-{n:05d}.manifest.json")
        named |= {"runs/from-shards/features/" + f["name"] for f in m["files"]}
        named.add(f"runs/from-shards/features/_fruits/part-{n:05d}.manifest.json")
    assert set(keys) == named, set(keys) - named
