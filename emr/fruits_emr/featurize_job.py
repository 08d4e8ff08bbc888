#!/usr/bin/env python3
"""The PySpark driver of `fruits` (Spark 3.5): fruit photos in S3 -> features
and PCA in S3, on every node of a cluster.

Spark splits the work, schedules it and retries it; the `fruits` binary, on
every node, does the work. The steps, in the order `main` runs them:

1. list_keys          driver     every image key of --input (`fruits list`), or a key list;
   list_shards                   or, with --shards, the shards of a `fruits pack` folder and
                                 their photo counts (`fruits parts list`: no photo is listed)
2. plan_partitions    driver     contiguous slices of the keys; partition index = part id;
   plan_shards                   or whole shards, in order, grouped by their photo counts
3. stage_weights      driver     the weights resolved and hashed once, one copy put on HDFS,
                                 handed to every executor with `SparkContext.addFile`
4. featurize          executors  one `fruits featurize` per partition, keys (or the
                                 partition's shard locations) on stdin, output straight
                                 to S3; retried by Spark when it fails
5. fit_pca            driver     `fruits pca fit` from the parts' statistics
6. transform          executors  one `fruits pca transform --part N` per part
7. write_report       driver     run.json: counts, per-node images/s, stage times, cost

What crosses the network: the keys, once, each slice to the executor that
runs it (they are the RDD's data, not captured in closures), or with
--shards only the shards' locations, a few per task; the weights,
once per executor (`addFile` of the HDFS copy, fetched into the executor's
work directory and reused by every task there); the images, from S3 to the
node that featurises them; the parts, from that node straight to S3; one
small JSON report per task back to the driver. No weights are pickled into
tasks, and no executor downloads them from the model hub or S3.

The executor side (`featurize_partition`, `transform_partition`) is a plain
function of (partition index, keys or shard locations, local paths), so
tests call it without Spark; `run_partitions` is the only place that knows
about Spark's tasks.
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

# Variables a task passes to the binary: the AWS SDK's credentials and
# endpoint settings, and nothing else of the executor's environment (an
# EMR node's environment is large and not ours).
PASSED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "HF_HOME",
    "HF_ENDPOINT",
)


def log(msg: str) -> None:
    """Driver and executor messages go to stderr (Spark's logs), data to files."""
    print(f"featurize_job: {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What every task needs, built once on the driver and shipped with the
    tasks (a few hundred bytes)."""

    fruits: str  # absolute path of the binary on every node
    output: str  # the run's folder: features/, pca/, reduced/ below it
    model: str
    weights_name: str  # the `addFile` name: SparkFiles.get(weights_name)
    weights_sha256: str
    run_id: str
    threads: int
    resume: bool
    max_rejected: float
    global_flags: tuple  # --region / --s3-endpoint, passed to every command
    shards: bool = False  # the tasks' lines are shards (.parquet of `fruits pack`), not photos

    def folder(self, name: str) -> str:
        return self.output.rstrip("/") + "/" + name + "/"


def child_env(threads: int, environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The explicit environment of a `fruits` child process."""
    environ = os.environ if environ is None else environ
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        # The binary's model threads: this task's share of the node.
        "RAYON_NUM_THREADS": str(threads),
    }
    env.update({k: environ[k] for k in PASSED_ENV if k in environ})
    return env


def run_fruits(fruits: str, args: List[str], env: Dict[str, str], stdin: Optional[str] = None,
               check: bool = True) -> subprocess.CompletedProcess:
    r"""Runs the binary, which dies with this process (`die_with_parent`);
    with `check`, a non-zero exit raises with its stderr. Its output is
    decoded here, not in text mode: text mode turns every "\r" into "\n",
    which would split a key holding one."""
    data = None if stdin is None else stdin.encode("utf-8", "surrogateescape")
    proc = subprocess.run([fruits] + args, input=data, env=env, capture_output=True,
                          preexec_fn=die_with_parent(os.getpid()))
    proc.stdout = proc.stdout.decode("utf-8", "surrogateescape")
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        failed(fruits, args, proc)
    return proc


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> Optional[Callable[[], None]]:
    """The `preexec_fn` that makes a `fruits` child die (SIGKILL) with the
    process that started it, on Linux. Spark kills a task's Python worker,
    not the worker's children: a `featurize` left running would commit its
    part after its task is gone, replacing the manifest of the attempt that
    won, or racing `parts clean`. The signal follows the death of the thread
    that forks the child (tasks and the driver call this from their main
    thread); the parent's pid is checked after the request, in case the
    parent died before it. prctl is looked up here, in the parent: the
    child, between fork and exec, only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl, sigkill = ctypes.CDLL(None, use_errno=True).prctl, int(signal.SIGKILL)

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(137)

    return preexec


def failed(fruits: str, args: List[str], proc: subprocess.CompletedProcess):
    raise RuntimeError(f"{fruits} {' '.join(args[:2])} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")


# 1. ------------------------------------------------------------------ driver
def list_keys(spec: TaskSpec, input_folder: Optional[str], key_list: Optional[str], env):
    """Every image key, in `fruits list` order (byte order of the path below
    --input, S3's), or the lines of a key list (a local file or s3://...);
    and how many files the listing found that are not images."""
    if key_list:
        return key_lines(key_list_text(spec, key_list, env)), 0
    proc = run_fruits(spec.fruits, list(spec.global_flags) + ["list", input_folder], env)
    summary = proc.stderr.strip().split("\n")[-1]
    log(summary or "listed")
    others = re.search(r"\((\d+) other files, not images\)", summary)
    return key_lines(proc.stdout), int(others.group(1)) if others else 0


# What the binary's str::trim() removes (Unicode White_Space), to skip the
# blank lines it skips; Python's str.strip() also removes \x1c-\x1f.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
              "\u2028\u2029\u202f\u205f\u3000"


def key_lines(text: str) -> List[str]:
    r"""The keys of a key list or of `fruits list`, read as the binary reads
    a key list: lines end at "\n" only, a trailing "\r" is dropped, blank
    lines are skipped. str.splitlines() also ends lines at "\r", "\x0c",
    "\x85", "\u2028" and more, which cut a key in two, and a fragment
    without s3:// is read as a local path on the node."""
    keys = (line.rstrip("\r") for line in text.split("\n"))
    return [key for key in keys if key.strip(WHITE_SPACE)]


def key_list_text(spec: TaskSpec, key_list: str, env) -> str:
    """The text of a key list, local or s3://, its line ends untouched
    (newline="": no universal-newline translation)."""
    if not key_list.startswith("s3://"):
        with open(key_list, encoding="utf-8", newline="") as f:
            return f.read()
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "keys.txt")
        run_fruits(spec.fruits, list(spec.global_flags) + ["cp", key_list, local], env)
        with open(local, encoding="utf-8", newline="") as f:
            return f.read()


@dataclasses.dataclass(frozen=True)
class Shard:
    part: int  # the shard's part number in its folder
    rows: int  # photos it holds, from its manifest
    location: str  # its rows file: a line of `featurize --keys -`


def shard_lines(text: str) -> List[Shard]:
    r"""The shards in the output of `fruits parts list`: one line a part,
    `part<TAB>rows<TAB>rows file`, lines ending at "\n" only (as key_lines;
    the location is the rest of the line, tabs and all), in part order."""
    shards = []
    for line in key_lines(text):
        fields = line.split("\t", 2)
        if len(fields) != 3 or not all(re.fullmatch(r"[0-9]+", f) for f in fields[:2]):
            raise RuntimeError(f"`fruits parts list` printed a line that is not part, rows, file: {line!r}")
        shards.append(Shard(part=int(fields[0]), rows=int(fields[1]), location=fields[2]))
    return sorted(shards, key=lambda s: s.part)


def list_shards(spec: TaskSpec, folder: str, env) -> List[Shard]:
    """The complete shards of a `fruits pack` folder and how many photos each
    holds, from their manifests (`fruits parts list`): no photo is listed or
    read. Refuses a folder without shards, and a folder of other parts
    (features, reduced) by the kind its first manifest records: every task
    would fail on them."""
    proc = run_fruits(spec.fruits, list(spec.global_flags) + ["parts", "list", folder], env)
    log((proc.stderr.strip().split("\n")[-1] or "listed") + f" in {folder}")
    shards = shard_lines(proc.stdout)
    if not shards:
        raise RuntimeError(f"no complete shards in {folder}: `fruits pack --output {folder}` writes them")
    manifest = folder.rstrip("/") + f"/_fruits/part-{shards[0].part:05d}.manifest.json"
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "manifest.json")
        run_fruits(spec.fruits, list(spec.global_flags) + ["cp", manifest, local], env)
        with open(local, encoding="utf-8") as f:
            kind = json.load(f).get("kind")
    if kind != "shards":
        raise RuntimeError(f"{folder} holds parts of kind {kind!r}, not shards (`fruits pack` writes shards)")
    bad = [s.location for s in shards if not s.location.endswith(".parquet")]
    if bad:
        raise RuntimeError(f"shards whose rows file is not .parquet: {bad[:5]}")
    return shards


# 2. ------------------------------------------------------------------ driver
def plan_partitions(keys: List[str], images_per_partition: int, slots: int,
                    partitions: Optional[int] = None) -> List[List[str]]:
    """Contiguous slices of `keys`: as many as `partitions`, else enough for
    `images_per_partition` each but at least one per task slot (so every
    executor works), never an empty one. Slice i is part i."""
    if not keys:
        return []
    n = partitions or max(math.ceil(len(keys) / max(images_per_partition, 1)), slots)
    n = max(1, min(n, len(keys)))
    size, extra = divmod(len(keys), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(keys[start:end])
        start = end
    return out


def plan_shards(shards: List[Shard], images_per_partition: int, slots: int,
                partitions: Optional[int] = None) -> List[List[str]]:
    """Whole shards, in their order, grouped into partitions by their photo
    counts; group i is part i, and each holds the locations of its shards.

    The target is --images-per-partition photos a task, lowered to the
    photos / task slots so that every executor works when there are shards
    enough; with `partitions` it is photos / partitions instead (about that
    many partitions: shards are never split). A group closes before the
    shard that would take it over the target, so no group holds more than
    the target except a shard bigger than it, which is a group of its own.
    A shard of no photos joins the group it falls in (no task of nothing).
    Grouping from the first shard, with shards numbered as `fruits pack`
    adds them, the groups before the last stay the same when shards are
    added at the end."""
    total = sum(s.rows for s in shards)
    if partitions:
        target = math.ceil(total / partitions)
    else:
        target = min(max(images_per_partition, 1), math.ceil(total / max(slots, 1)))
    target = max(target, 1)
    groups: List[List[str]] = []
    current: List[str] = []
    rows = 0
    for s in shards:
        if current and s.rows and rows + s.rows > target:
            groups.append(current)
            current, rows = [], 0
        current.append(s.location)
        rows += s.rows
    if current:
        groups.append(current)
    return groups


def stale_parts(parts: List[dict], slices: List[List[str]], shards: List[Shard]) -> List[int]:
    """The parts --resume skipped whose photos are not their shards' of now:
    a part committed before `fruits pack` added shards that this plan puts
    in it (the last group grows first) holds fewer photos than its shards,
    and skipping it would leave the new ones out."""
    rows = {s.location: s.rows for s in shards}
    return sorted(p["part"] for p in parts if p.get("status") == "skipped"
                  and p.get("inputs") != sum(rows[loc] for loc in slices[p["part"]]))


# 3. ------------------------------------------------------------------ driver
@dataclasses.dataclass(frozen=True)
class Staged:
    name: str  # file name executors ask SparkFiles for
    sha256: str
    uri: str  # the one staged copy (hdfs:///... on EMR)
    source: str  # where the driver got it


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(spec_fruits: str, model: str, weights: Optional[str], tmp: str, env, flags) -> str:
    """A local file of the weights, got once, on the driver."""
    if weights is None:  # the pinned hub file, fetched (or found cached) and checked by the binary
        return run_fruits(spec_fruits, ["weights", "fetch", "--model", model], env).stdout.strip()
    if weights.startswith("random:"):  # deterministic random weights, made once, staged like a file
        out = os.path.join(tmp, f"{model}-{weights.replace(':', '-')}.safetensors")
        run_fruits(spec_fruits, ["weights", "init", "--model", model, "--seed", weights.split(":", 1)[1],
                                 "--out", out], env)
        return out
    if weights.startswith("s3://"):
        out = os.path.join(tmp, "weights.safetensors")
        run_fruits(spec_fruits, list(flags) + ["cp", weights, out], env)
        return out
    return weights


def stage_weights(local: str, stage_dir: str, source: str, put: Callable[[str, str], None]) -> Staged:
    """One copy of the weights at `stage_dir/<sha256>.safetensors` (named by
    content: a rerun with the same weights finds it there)."""
    digest = sha256_of(local)
    name = f"{digest}.safetensors"
    uri = stage_dir.rstrip("/") + "/" + name
    put(local, uri)
    log(f"weights {source} (sha256 {digest[:12]}...) staged once at {uri}")
    return Staged(name=name, sha256=digest, uri=uri, source=source)


def put_staged(local: str, uri: str) -> None:
    """Puts the driver's copy at `uri`: HDFS on a cluster, a folder in tests."""
    if uri.startswith("file://"):
        dest = uri[len("file://"):]
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.exists(dest):
            shutil.copyfile(local, dest)
        return
    if subprocess.run(["hdfs", "dfs", "-test", "-e", uri]).returncode == 0:
        return  # content-addressed: already there
    subprocess.run(["hdfs", "dfs", "-mkdir", "-p", uri.rsplit("/", 1)[0]], check=True)
    subprocess.run(["hdfs", "dfs", "-put", "-f", local, uri], check=True)


# 4. --------------------------------------------------------------- executors
def featurize_partition(index: int, keys: List[str], spec: TaskSpec, weights_path: str,
                        attempt: int = 0, environ=None) -> dict:
    """Runs on an executor: one `fruits featurize` for part `index`, its keys
    on stdin (with `spec.shards`, the locations of its whole shards: the
    binary reads their photos, a row group at a time, and names each row by
    the photo's original path), the executor's own copy of the weights
    (checked against the staged sha256 by the binary). Raises when the
    binary fails, so Spark retries the task; the part's manifest makes the
    retry safe."""
    args = list(spec.global_flags) + [
        "featurize", "--keys", "-", "--output", spec.folder("features"),
        "--part-id", str(index), "--run-id", spec.run_id, "--model", spec.model,
        "--weights", weights_path, "--weights-sha256", spec.weights_sha256,
        "--threads", str(spec.threads), "--max-rejected", str(spec.max_rejected),
        "--report", "-", "--quiet",
    ]
    if spec.resume:
        args.append("--skip-existing")
    start = time.time()
    proc = run_fruits(spec.fruits, args, child_env(spec.threads, environ), stdin="\n".join(keys) + "\n",
                      check=False)
    # The report is the binary's last word: a part over --max-rejected
    # exits non-zero but is committed, and its report says so; any other
    # failure has no report, or one that does not say so.
    lines = proc.stdout.strip().split("\n")
    try:
        report = json.loads(lines[-1])
    except ValueError:
        report = None
    if proc.returncode != 0 and not (isinstance(report, dict) and report.get("too_many_rejected")):
        failed(spec.fruits, args, proc)
    report.update({
        "keys": 0 if spec.shards else len(keys),  # photo keys this task was given
        "task_attempt": attempt,
        "task_seconds": time.time() - start,
        "weights_path": weights_path,
    })
    if spec.shards:
        report.update({"shards": len(keys), "shard_files": list(keys)})
    return report


def transform_partition(index: int, spec: TaskSpec, environ=None) -> dict:
    """Runs on an executor: reduces part `index` with the fitted PCA."""
    start = time.time()
    args = list(spec.global_flags) + [
        "pca", "transform", "--features", spec.folder("features"), "--model", spec.folder("pca"),
        "--output", spec.folder("reduced"), "--part", str(index),
    ]
    run_fruits(spec.fruits, args, child_env(spec.threads, environ))
    return {"part": index, "seconds": time.time() - start}


def run_partitions(sc, slices: List[List[str]], spec: TaskSpec) -> List[dict]:
    """Driver: one Spark task per slice; each element of the RDD is (part id,
    keys) or (part id, shard locations), so a task receives only its own."""
    from pyspark import SparkFiles, TaskContext

    def task(items):
        ctx = TaskContext.get()
        for index, keys in items:
            path = SparkFiles.get(spec.weights_name)
            yield featurize_partition(index, keys, spec, path, ctx.attemptNumber() if ctx else 0)

    rdd = sc.parallelize(list(enumerate(slices)), len(slices))
    return rdd.mapPartitions(task).collect()


def transform_partitions(sc, parts: List[int], spec: TaskSpec) -> List[dict]:
    rdd = sc.parallelize(parts, max(len(parts), 1))
    return rdd.map(lambda i: transform_partition(i, spec)).collect()


# 5. ------------------------------------------------------------------ driver
def fit_pca(spec: TaskSpec, keep: List[str], env) -> dict:
    """`fruits pca fit` on the driver: it merges the parts' statistics files,
    so it reads 6.5 MB per part whatever the rows."""
    run_fruits(spec.fruits, list(spec.global_flags) + [
        "pca", "fit", "--features", spec.folder("features"), "--output", spec.folder("pca")] + keep, env)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "pca.json")
        run_fruits(spec.fruits, list(spec.global_flags) + ["cp", spec.folder("pca") + "pca.json", local], env)
        with open(local, encoding="utf-8") as f:
            return json.load(f)


def clean_leftovers(spec: TaskSpec, env) -> int:
    """After the stages (no attempt writes any more): removes files of attempts
    that failed or lost, so plain readers of the folders see one copy."""
    removed = 0
    for folder in ("features", "reduced"):
        proc = run_fruits(spec.fruits, list(spec.global_flags) + [
            "parts", "clean", "--older-than", "0", spec.folder(folder)], env)
        removed += len([line for line in proc.stdout.split("\n") if line])
    return removed


# 7. ------------------------------------------------------------------ driver
def summarise(parts: List[dict], stages: Dict[str, float], pca: dict, staged: Staged, spec: TaskSpec,
              cost_per_hour: Optional[float], cluster: Optional[str]) -> dict:
    """run.json: what the run did, per node and in all."""
    done = [p for p in parts if p.get("status") == "done"]
    # Totals over every part of the output, skipped ones (--resume) from their manifests.
    totals = {k: sum(p.get(k, 0) for p in parts) for k in ("inputs", "featurised", "rejected", "not_images",
                                                            "duplicates")}
    nodes: Dict[str, dict] = {}
    for p in done:
        n = nodes.setdefault(p["host"], {"parts": 0, "images": 0, "seconds": 0.0, "devices": []})
        n["parts"] += 1
        n["images"] += p["inputs"]
        n["seconds"] += p["seconds"]
        if p["device"] not in n["devices"]:
            n["devices"].append(p["device"])
    for n in nodes.values():
        n["images_per_s"] = n["images"] / n["seconds"] if n["seconds"] else 0.0
    wall = stages.get("total_s", 0.0)
    report = {
        "run_id": spec.run_id,
        "output": spec.output,
        "model": spec.model,
        "weights": {"sha256": staged.sha256, "source": staged.source, "staged": staged.uri,
                    "executor_copies": sorted({os.path.dirname(p["weights_path"]) for p in parts})},
        "images": totals,
        # Shards read (--shards): their photos are counted in "images".
        "shards": sum(p.get("shards", 0) for p in parts),
        "parts": {"total": len(parts), "done": len(done), "skipped": len(parts) - len(done),
                  "too_many_rejected": [p["part"] for p in parts if p.get("too_many_rejected")]},
        "nodes": nodes,
        # This run's work only: parts skipped by --resume cost nothing now.
        "images_per_s": sum(p["inputs"] for p in done) / stages["featurize_s"] if stages.get("featurize_s") else 0.0,
        "stages": stages,
        "pca": {"n_components": pca.get("n_components"), "n_samples": pca.get("n_samples"),
                "explained": (pca.get("cumulative_explained_variance_ratio") or [None])[-1]},
        "partitions": sorted(parts, key=lambda p: p["part"]),
    }
    if cost_per_hour is not None:
        report["cost"] = {"cluster": cluster, "per_hour_usd": cost_per_hour,
                          "this_run_usd": round(cost_per_hour * wall / 3600, 4)}
    return report


def render(report: dict) -> str:
    """run.json for a person."""
    img, st = report["images"], report["stages"]
    shards = f" from {report['shards']} shards" if report.get("shards") else ""
    lines = [
        f"run {report['run_id']}: {img['featurised']} of {img['inputs']} images{shards} featurised, "
        f"{img['rejected']} rejected, {img['not_images']} not images, {img['duplicates']} duplicates dropped",
        f"parts: {report['parts']['done']} written, {report['parts']['skipped']} already complete; "
        f"PCA k = {report['pca']['n_components']} of {report['pca']['n_samples']} rows",
        "stages: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in st.items()),
        f"throughput: {report['images_per_s']:.1f} images/s over the featurize stage",
    ]
    for host, n in sorted(report["nodes"].items()):
        lines.append(f"  {host}: {n['images']} images in {n['parts']} parts, {n['images_per_s']:.1f} images/s "
                     f"per task, {', '.join(n['devices'])}")
    lines.append(f"weights: {report['weights']['source']} -> {report['weights']['staged']}, "
                 f"{len(report['weights']['executor_copies'])} executor copies")
    if "cost" in report:
        c = report["cost"]
        lines.append(f"cost: ~${c['this_run_usd']:.2f} for this run at ${c['per_hour_usd']:.3f}/h ({c['cluster']})")
    return "\n".join(lines)


def write_report(spec: TaskSpec, report: dict, env) -> str:
    dest = spec.output.rstrip("/") + "/run.json"
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "run.json")
        with open(local, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        run_fruits(spec.fruits, list(spec.global_flags) + ["cp", local, dest], env)
    return dest


def default_run_id(output: str) -> str:
    """A run id named after the output folder: `run-1-<8 hex of the full
    location>`. A folder holds one run, so a rerun into it (--resume after a
    failure) is the same run and finds its complete parts."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", output.rstrip("/").rsplit("/", 1)[-1])[:100] or "run"
    return f"{name}-{hashlib.sha256(output.rstrip('/').encode()).hexdigest()[:8]}"


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="folder of images: s3://bucket/prefix/ (or a path every node sees)")
    src.add_argument("--keys", help="file listing image keys, one per line (local or s3://)")
    src.add_argument("--shards", help="folder of shards written by `fruits pack` (s3://bucket/shards/): "
                                      "listed by `fruits parts list`, whole shards per task")
    p.add_argument("--output", required=True, help="the run's folder: s3://bucket/run-1/")
    p.add_argument("--model", default="mobilenetv2")
    p.add_argument("--weights", help="safetensors path or s3://..., or random:SEED; default: the pinned hub file")
    p.add_argument("--fruits", default="/usr/local/bin/fruits", help="the binary, at this path on every node")
    p.add_argument("--stage-dir", default="hdfs:///fruits/weights", help="where the one copy of the weights goes")
    p.add_argument("--images-per-partition", type=int, default=2000,
                   help="photos a task; with --shards, whole shards up to this many (a bigger shard alone)")
    p.add_argument("--partitions", type=int, help="number of parts (default: from --images-per-partition; "
                                                  "with --shards, about that many)")
    p.add_argument("--run-id", help="default: from --output (the same for a rerun into it, so --resume works)")
    p.add_argument("--resume", action="store_true", help="skip parts already complete")
    p.add_argument("--max-rejected", type=float, default=0.01)
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--k", type=int)
    keep.add_argument("--variance", type=float, default=0.95)
    p.add_argument("--region", help="passed to every fruits command")
    p.add_argument("--s3-endpoint", help="passed to every fruits command (S3-compatible servers)")
    p.add_argument("--cost-per-hour", type=float, help="the cluster's price, for the report")
    p.add_argument("--cluster", help="a description of the cluster, for the report")
    return p.parse_args(argv)


def main(argv: List[str]) -> int:
    from pyspark.sql import SparkSession

    args = parse_args(argv)
    t0 = time.time()
    spark = SparkSession.builder.appName("fruits-featurize").getOrCreate()
    sc = spark.sparkContext
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    flags = tuple(f for k, v in (("--region", args.region), ("--s3-endpoint", args.s3_endpoint)) if v
                  for f in (k, v))
    env = child_env(task_cpus)
    stages: Dict[str, float] = {}

    def timed(name, f):
        t = time.time()
        r = f()
        stages[name + "_s"] = round(time.time() - t, 3)
        return r

    with tempfile.TemporaryDirectory() as tmp:
        local = timed("weights", lambda: resolve_weights(args.fruits, args.model, args.weights, tmp, env, flags))
        staged = stage_weights(local, args.stage_dir, args.weights or f"pinned {args.model}", put_staged)
        sc.addFile(staged.uri)
    spec = TaskSpec(fruits=args.fruits, output=args.output, model=args.model, weights_name=staged.name,
                    weights_sha256=staged.sha256, run_id=args.run_id or default_run_id(args.output), threads=task_cpus,
                    resume=args.resume, max_rejected=args.max_rejected, global_flags=flags,
                    shards=bool(args.shards))
    slots = max(1, sc.defaultParallelism // task_cpus)
    if args.shards:
        shards = timed("list", lambda: list_shards(spec, args.shards, env))
        slices, not_images = plan_shards(shards, args.images_per_partition, slots, args.partitions), 0
        log(f"{len(shards)} shards of {sum(s.rows for s in shards)} photos in {len(slices)} partitions of whole "
            f"shards ({slots} task slots), run {spec.run_id}")
    else:
        keys, not_images = timed("list", lambda: list_keys(spec, args.input, args.keys, env))
        slices = plan_partitions(keys, args.images_per_partition, slots, args.partitions)
        log(f"{len(keys)} keys in {len(slices)} partitions ({slots} task slots), run {spec.run_id}")
    parts = timed("featurize", lambda: run_partitions(sc, slices, spec))
    stale = stale_parts(parts, slices, shards) if args.shards else []
    if stale:
        raise RuntimeError(f"--resume: parts {', '.join(map(str, stale))} were written from fewer photos than "
                           f"their shards hold now (shards packed since): run into a new --output")
    keep = ["--k", str(args.k)] if args.k else ["--variance", str(args.variance)]
    pca = timed("pca_fit", lambda: fit_pca(spec, keep, env))
    timed("transform", lambda: transform_partitions(sc, [p["part"] for p in parts], spec))
    removed = timed("clean", lambda: clean_leftovers(spec, env))
    stages["total_s"] = round(time.time() - t0, 3)
    report = summarise(parts, stages, pca, staged, spec, args.cost_per_hour, args.cluster)
    report["images"]["not_images"] += not_images  # counted by the listing, not by the tasks
    report["leftovers_removed"] = removed
    dest = write_report(spec, report, env)
    print(render(report))
    print(f"report: {dest}")
    spark.stop()
    over = report["parts"]["too_many_rejected"]
    if over:
        # The parts are committed, and the step fails so that nobody takes
        # the run as clean: their errors files say why.
        log(f"parts {', '.join(map(str, over))} rejected more than --max-rejected {args.max_rejected}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
