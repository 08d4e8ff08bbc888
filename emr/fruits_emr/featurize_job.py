#!/usr/bin/env python3
"""The PySpark driver of `fruits` (Spark 3.5): fruit photos in S3 -> features
and PCA in S3, on every node of a cluster.

Spark splits the work, schedules it and retries it; the `fruits` binary, on
every node, does the work. The steps, in the order `main` runs them:

1. list_in_slices     driver +   the folder (--input) cut at its folders (`fruits list --folders`,
                      executors  a few levels down), each slice listed by a task into a key list of
                                 the run (keys/slice-NNNNN.txt); or --keys, a key list, as it is
   list_shards                   or, with --shards, the shards of a `fruits pack` folder and
                                 their photo counts (`fruits parts list`: no photo is listed)
2. plan_ranges        driver     byte ranges of the key lists, cut at their marks (at most MARKS each),
                                 grouped by their lines; partition index = part id;
   plan_shards                   or whole shards, in order, grouped by their photo counts
3. stage_weights      driver     the weights resolved and hashed once, one copy put on HDFS,
                                 handed to every executor with `SparkContext.addFile`
4. featurize          executors  one `fruits featurize` per partition, its key ranges read
                                 (`fruits cp --bytes`) and their keys on stdin (or the
                                 partition's shard locations), output straight to S3;
                                 retried by Spark when it fails
5. merge_tree         executors  the parts' statistics merged MERGE_FAN_IN at a time
                                 (`fruits pca merge`), level after level
   fit_pca            driver     `fruits pca fit --stats` from the last level's few files
6. transform          executors  one `fruits pca transform --part N` per part
7. write_report       driver     run.json: counts, per-node images/s, stage times, cost

What crosses the network: never the keys through the driver: a task
gets its key ranges (a location and two byte offsets each) or its
shards' locations, a few per task, and reads its keys itself; the driver
holds the key lists' marks, at most MARKS numbers per list; the weights,
once per executor (`addFile` of the HDFS copy, fetched into the executor's
work directory and reused by every task there); the images, from S3 to the
node that featurises them; the parts, from that node straight to S3; one
small JSON report per task back to the driver. No weights are pickled into
tasks, and no executor downloads them from the model hub or S3.

The executor side (`list_slice`, `featurize_partition`, `transform_partition`)
is a plain function of (partition index, its inputs, local paths), so
tests call it without Spark; `run_partitions` is the only place that knows
about Spark's tasks.
"""

import argparse
import array
import concurrent.futures
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
    "FRUITS_KERNEL_CACHE",  # the compiled CUDA kernels, kept once per node (default: under HOME)
)


def log(msg: str) -> None:
    """Driver and executor messages go to stderr (Spark's logs), data to files."""
    print(f"featurize_job: {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What every task needs, built once on the driver and shipped with the
    tasks (a few hundred bytes)."""

    fruits: str  # absolute path of the binary on every node
    output: str  # the run's folder: keys/, features/, stats/, pca/, reduced/ below it
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
# The driver never holds the keys. A folder is listed in slices on the
# executors, each slice into a key list of its own in the run's keys/
# folder; a key list (--keys, or a slice's) is handed to tasks as byte
# ranges. The driver holds at most MARKS byte marks a slice's key list
# (KEY_LIST_MARKS for --keys), whatever its keys: its memory grows with
# the slices, not the photos.

MARKS = 1000  # byte marks a listing slice's key list may be cut at, at most
KEY_LIST_MARKS = 100_000  # and --keys's (one list: tasks of its keys / 100,000 at least)
LONGEST_LINE = 4096  # bytes; a key list's range this long holds a line start (a path is at most this long)
LISTING_SLICES_PER_SLOT = 4  # listing slices wanted per task slot (fewer if the folders are fewer)
LISTING_DEPTH = 3  # folders this deep at most split a listing
LISTING_THREADS = 16  # `fruits list --folders` the driver runs at once


@dataclasses.dataclass(frozen=True)
class KeyRange:
    """The keys of a key list whose lines start at a byte in [start, end):
    a range cut anywhere (even inside a line) loses no line and repeats
    none, as Hadoop cuts text files."""

    location: str  # a key list, local (seen by every node) or s3://
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class KeyFile:
    """A key list as the planner sees it: its size, its lines (counted, or
    estimated from its first bytes for --keys) and the byte marks it may
    be cut at, `step` lines apart (at line starts when counted)."""

    location: str
    size: int
    lines: int
    marks: tuple  # ascending byte offsets in (0, size), at most MARKS
    step: int  # lines between two marks (the last block holds the rest)

    def blocks(self) -> List[tuple]:
        """(lines, (location, start, end)) between each two marks."""
        cuts = [0] + list(self.marks) + [self.size]
        rest = max(self.lines - self.step * len(self.marks), 1)
        return [(self.step if i < len(self.marks) else rest, (self.location, cuts[i], cuts[i + 1]))
                for i in range(len(cuts) - 1)]


def listing_bounds(spec: "TaskSpec", root: str, slots: int, env) -> List[str]:
    """The names a folder's listing is cut at: its folders (`fruits list
    --folders`), and theirs, down to LISTING_DEPTH levels, until there are
    LISTING_SLICES_PER_SLOT per task slot. One LIST request or so per
    folder split, on the driver; no photo is listed here."""
    bounds: List[str] = []
    frontier = [""]

    def folders(folder: str) -> List[str]:
        proc = run_fruits(spec.fruits, list(spec.global_flags) + ["list", "--folders", join(root, folder)], env)
        return [folder + name for name in key_lines(proc.stdout)]

    for _ in range(LISTING_DEPTH):
        if len(bounds) + 1 >= LISTING_SLICES_PER_SLOT * slots:
            break
        # A level's folders at once (a LIST with S3's delimiter each): the
        # driver waits on S3's latency, not on its CPU.
        with concurrent.futures.ThreadPoolExecutor(min(len(frontier), LISTING_THREADS)) as pool:
            deeper = [name for names in pool.map(folders, frontier) for name in names]
        if not deeper:
            break
        bounds = sorted(set(bounds) | set(deeper))
        frontier = deeper
    return bounds


def listing_slices(bounds: List[str]) -> List[tuple]:
    """(after, before) for each slice between two bounds (None: open), in
    order: together, the whole folder, each key in exactly one slice (a
    bound is a folder name ending in "/", never a photo's)."""
    ends = [None] + list(bounds) + [None]
    return list(zip(ends[:-1], ends[1:], strict=True))


def join(root: str, name: str) -> str:
    return root if not name else root.rstrip("/") + "/" + name


def list_slice(index: int, bounds: tuple, root: str, spec: "TaskSpec", environ=None) -> dict:
    """Runs on an executor: `fruits list` of one slice of the folder, its
    lines streamed into a local file put at keys/slice-NNNNN.txt of the
    run. Returns the KeyFile's fields (marks at line starts, at most MARKS)
    and the files that are not images."""
    after, before = bounds
    args = list(spec.global_flags) + ["list", root]
    args += (["--after", after] if after else []) + (["--before", before] if before else [])
    env = child_env(spec.threads, environ)
    with tempfile.TemporaryDirectory() as tmp:
        local, err = os.path.join(tmp, "keys.txt"), os.path.join(tmp, "stderr.txt")
        starts = array.array("Q")  # every line's first byte: 8 bytes a key, on the executor
        with open(local, "wb") as out, open(err, "w+b") as errors:
            proc = subprocess.Popen([spec.fruits] + args, stdout=subprocess.PIPE, stderr=errors, env=env,
                                    preexec_fn=die_with_parent(os.getpid()))
            size = 0
            for line in proc.stdout:
                starts.append(size)
                out.write(line)
                size += len(line)
            code = proc.wait()
            errors.seek(0)
            stderr = errors.read().decode("utf-8", "replace")
        if code != 0:
            raise RuntimeError(f"{spec.fruits} list exited with {code}:\n{stderr[-4000:]}")
        others = re.search(r"\((\d+) other files, not images\)", stderr)
        location = spec.folder("keys") + f"slice-{index:05d}.txt"
        if starts:
            run_fruits(spec.fruits, list(spec.global_flags) + ["cp", local, location], env)
    step = max(1, math.ceil(len(starts) / (MARKS + 1)))
    return {"slice": index, "location": location, "size": size, "lines": len(starts),
            "marks": list(starts[step::step]), "step": step, "not_images": int(others.group(1)) if others else 0}


def list_in_slices(sc, root: str, spec: "TaskSpec", slots: int, env) -> tuple:
    """Driver: the folder's key files, listed on the executors one slice a
    task; and the files that are not images."""
    slices = listing_slices(listing_bounds(spec, root, slots, env))
    rdd = sc.parallelize(list(enumerate(slices)), len(slices))
    listed = sorted(rdd.map(lambda item: list_slice(item[0], item[1], root, spec)).collect(),
                    key=lambda r: r["slice"])
    files = [KeyFile(r["location"], r["size"], r["lines"], tuple(r["marks"]), r["step"]) for r in listed if r["lines"]]
    log(f"listed {root} in {len(slices)} slices on the executors: {sum(f.lines for f in files)} keys")
    return files, sum(r["not_images"] for r in listed)


def key_list_file(spec: "TaskSpec", key_list: str, env) -> KeyFile:
    """A key list (--keys, local or s3://) as a KeyFile, without reading it:
    its size, its lines estimated from its first 64 KiB, and up to
    KEY_LIST_MARKS marks at equal bytes, never closer than LONGEST_LINE (so that each
    block holds a line start: no task of nothing)."""
    flags = list(spec.global_flags)
    size = int(run_fruits(spec.fruits, flags + ["cp", "--size", key_list], env).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "head.txt")
        run_fruits(spec.fruits, flags + ["cp", "--bytes", f"0..{min(size, 1 << 16)}", key_list, local], env)
        with open(local, "rb") as f:
            head = f.read()
    # Bytes a line over the whole lines of the head (its last may be cut).
    whole = head.count(b"\n")
    per_line = max((head.rfind(b"\n") + 1) / whole if whole else float(len(head)), 1.0)
    lines = max(round(size / per_line), 1 if size else 0)
    blocks = max(1, min(KEY_LIST_MARKS + 1, size // LONGEST_LINE, lines))
    marks = tuple(size * i // blocks for i in range(1, blocks))
    return KeyFile(key_list, size, lines, marks, max(1, lines // blocks))


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
def plan_ranges(files: List[KeyFile], images_per_partition: int, slots: int,
                partitions: Optional[int] = None) -> List[List[KeyRange]]:
    """The tasks' key ranges: the key files' blocks (between two marks) in
    order, cut into `partitions` groups, else enough for about
    `images_per_partition` keys each but at least one per task slot, each
    group about as many keys as the next (cut at the block that crosses
    its share) and never empty; a group's adjacent blocks of one file are
    one range. Group i is part i."""
    blocks = [b for f in files for b in f.blocks()]
    total = sum(lines for lines, _ in blocks)
    if not blocks:
        return []
    n = partitions or max(math.ceil(total / max(images_per_partition, 1)), slots)
    n = max(1, min(n, len(blocks)))
    groups: List[List[KeyRange]] = []
    done, last = 0, -1
    for lines, (location, start, end) in blocks:
        g = min(n - 1, (2 * done + lines) * n // (2 * total))  # the group of the block's middle line
        done += lines
        if g != last:
            groups.append([])
            last = g
        ranges = groups[-1]
        if ranges and ranges[-1].location == location and ranges[-1].end == start:
            ranges[-1] = KeyRange(location, ranges[-1].start, end)
        else:
            ranges.append(KeyRange(location, start, end))
    return groups


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
    return group_by_rows([(s.rows, s.location) for s in shards], images_per_partition, slots, partitions)


def group_by_rows(items: List[tuple], images_per_partition: int, slots: int,
                  partitions: Optional[int] = None) -> List[list]:
    """(rows, item) pairs, in order, grouped as plan_shards says."""
    total = sum(rows for rows, _ in items)
    if partitions:
        target = math.ceil(total / partitions)
    else:
        target = min(max(images_per_partition, 1), math.ceil(total / max(slots, 1)))
    target = max(target, 1)
    groups: List[list] = []
    current: list = []
    rows = 0
    for n, item in items:
        if current and n and rows + n > target:
            groups.append(current)
            current, rows = [], 0
        current.append(item)
        rows += n
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
def range_text(r: KeyRange, spec: TaskSpec, env) -> bytes:
    """The lines of a key list that start in [r.start, r.end), read with
    `fruits cp --bytes` from the byte before the range (a line starts at
    r.start if that byte ends one) to the end of the last such line: one
    ranged read, a longer one while that line runs on."""
    lo = max(r.start - 1, 0)
    ask = r.end - lo + 4096
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "range.txt")
        while True:
            run_fruits(spec.fruits, list(spec.global_flags) + ["cp", "--bytes", f"{lo}..{lo + ask}", r.location,
                                                               local], env)
            with open(local, "rb") as f:
                data = f.read()
            last = data.find(b"\n", max(r.end - 1 - lo, 0))
            if last >= 0 or len(data) < ask:
                break
            ask *= 2
    cut = last + 1 if last >= 0 else len(data)
    first = 0 if r.start == 0 else (data.find(b"\n") + 1 or len(data))
    return data[first:cut] if first < cut else b""


def task_keys(inputs: list, spec: TaskSpec, env) -> List[str]:
    """A task's keys: its key ranges read (what the driver plans), or the
    keys themselves (tests, shards)."""
    if not inputs or not isinstance(inputs[0], KeyRange):
        return list(inputs)
    text = b"".join(range_text(r, spec, env) for r in inputs)
    return key_lines(text.decode("utf-8", "surrogateescape"))


def featurize_partition(index: int, inputs: list, spec: TaskSpec, weights_path: str,
                        attempt: int = 0, environ=None) -> dict:
    """Runs on an executor: one `fruits featurize` for part `index`, its keys
    (read from its key ranges, `inputs`) on stdin (with `spec.shards`, the
    locations of its whole shards: the
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
    env = child_env(spec.threads, environ)
    keys = task_keys(inputs, spec, env)
    proc = run_fruits(spec.fruits, args, env, stdin="\n".join(keys) + "\n", check=False)
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


def run_partitions(sc, slices: List[list], spec: TaskSpec) -> List[dict]:
    """Driver: one Spark task per slice; each element of the RDD is (part id,
    key ranges) or (part id, shard locations), so a task receives only its
    own, by reference."""
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


# 5. ----------------------------------------------------- executors + driver
MERGE_FAN_IN = 64  # statistics merged by one task: 64 x 6.5 MB (1280 wide) = 416 MB read


def part_ranges(parts: List[int]) -> str:
    """Part numbers as `fruits pca merge --parts` reads them: `0-63,70`."""
    ranges: List[List[int]] = []
    for n in sorted(parts):
        if ranges and ranges[-1][1] + 1 == n:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def merge_partition(index: int, level: int, inputs: list, spec: TaskSpec, environ=None) -> str:
    """Runs on an executor: one `fruits pca merge` of `inputs` (level 1:
    part numbers, each part's statistics found by its manifest's name;
    above: the files of the level below) into one file, which it returns.
    Its name depends only on (level, index), so a retried task rewrites
    the same file."""
    dest = f"{spec.folder('stats')}level-{level}/merge-{index:05d}.stats.safetensors"
    if level == 1:
        what = ["--features", spec.folder("features"), "--parts", part_ranges(inputs)]
    else:
        what = ["--stats"] + list(inputs)
    run_fruits(spec.fruits, list(spec.global_flags) + ["pca", "merge"] + what + ["--output", dest],
               child_env(spec.threads, environ))
    return dest


def merge_tree(sc, parts: List[int], spec: TaskSpec, fan_in: int) -> tuple:
    """The parts' statistics merged by tasks, `fan_in` at a time, level after
    level, until at most `fan_in` files are left for the driver: it reads
    fan_in files (at most) whatever the number of parts. Returns (the files,
    the levels run)."""
    items: list = sorted(parts)
    level = 0
    while level == 0 or len(items) > fan_in:
        level += 1
        groups = [items[i:i + fan_in] for i in range(0, len(items), fan_in)]
        rdd = sc.parallelize(list(enumerate(groups)), len(groups))
        items = rdd.map(lambda g, lv=level: merge_partition(g[0], lv, g[1], spec)).collect()
    return items, level


def fit_pca(spec: TaskSpec, keep: List[str], stats: List[str], env) -> dict:
    """`fruits pca fit --stats` on the driver: from the tree's last files
    (checked to hold exactly the parts the features folder's manifests
    name), so it reads a few files whatever the number of parts."""
    run_fruits(spec.fruits, list(spec.global_flags) + [
        "pca", "fit", "--features", spec.folder("features"), "--output", spec.folder("pca"),
        "--stats"] + list(stats) + keep, env)
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
                   help="photos a task (fruits-emr sets minutes of work at the core node's rate); with --shards, "
                        "whole shards up to this many (a bigger shard alone)")
    p.add_argument("--partitions", type=int, help="number of parts (default: from --images-per-partition; "
                                                  "with --shards, about that many)")
    p.add_argument("--run-id", help="default: from --output (the same for a rerun into it, so --resume works)")
    p.add_argument("--resume", action="store_true", help="skip parts already complete")
    p.add_argument("--max-rejected", type=float, default=0.01)
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--k", type=int)
    keep.add_argument("--variance", type=float, default=0.95)
    p.add_argument("--merge-fan-in", type=int, default=MERGE_FAN_IN,
                   help="statistics files one task merges (PCA as a tree of merges; the driver reads at most this "
                        "many)")
    p.add_argument("--region", help="passed to every fruits command")
    p.add_argument("--s3-endpoint", help="passed to every fruits command (S3-compatible servers)")
    p.add_argument("--cost-per-hour", type=float, help="the cluster's price, for the report")
    p.add_argument("--cluster", help="a description of the cluster, for the report")
    args = p.parse_args(argv)
    if args.merge_fan_in < 2:
        p.error(f"--merge-fan-in must be at least 2 (got {args.merge_fan_in}): a tree of one-file merges never ends")
    return args


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
        if args.keys:
            files, not_images = [timed("list", lambda: key_list_file(spec, args.keys, env))], 0
        else:
            files, not_images = timed("list", lambda: list_in_slices(sc, args.input, spec, slots, env))
        slices = plan_ranges(files, args.images_per_partition, slots, args.partitions)
        log(f"about {sum(f.lines for f in files)} keys in {len(files)} key lists, {len(slices)} partitions of key "
            f"ranges ({slots} task slots), run {spec.run_id}")
    parts = timed("featurize", lambda: run_partitions(sc, slices, spec))
    stale = stale_parts(parts, slices, shards) if args.shards else []
    if stale:
        raise RuntimeError(f"--resume: parts {', '.join(map(str, stale))} were written from fewer photos than "
                           f"their shards hold now (shards packed since): run into a new --output")
    keep = ["--k", str(args.k)] if args.k else ["--variance", str(args.variance)]
    stats, levels = timed("pca_merge", lambda: merge_tree(sc, [p["part"] for p in parts], spec, args.merge_fan_in))
    pca = timed("pca_fit", lambda: fit_pca(spec, keep, stats, env))
    timed("transform", lambda: transform_partitions(sc, [p["part"] for p in parts], spec))
    removed = timed("clean", lambda: clean_leftovers(spec, env))
    stages["total_s"] = round(time.time() - t0, 3)
    report = summarise(parts, stages, pca, staged, spec, args.cost_per_hour, args.cluster)
    report["images"]["not_images"] += not_images  # counted by the listing, not by the tasks
    report["leftovers_removed"] = removed
    report["pca_merge"] = {"levels": levels, "fan_in": args.merge_fan_in, "files_fitted": len(stats)}
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
