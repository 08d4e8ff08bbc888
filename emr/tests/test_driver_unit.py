"""The driver's pieces without Spark: the executor function is a plain
function of (partition index, keys, local paths), run here with the real
binary on local photos."""

import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import EMR, REPO, recording_fruits
from fruits_emr import featurize_job as job

SAMPLE = os.path.join(REPO, "tests", "data", "fruits-360-sample")


def test_key_ranges_are_planned_from_marks_in_order_and_fill_every_slot():
    # 1 byte a line, say; marks every 100 lines, every line, every 100.
    files = [job.KeyFile("s3://b/keys/slice-00000.txt", 250, 250, (100, 200), 100),
             job.KeyFile("s3://b/keys/slice-00001.txt", 3, 3, (1, 2), 1),
             job.KeyFile("s3://b/keys/slice-00002.txt", 120, 120, (100,), 100)]
    for ipp, slots, parts in [(200, 1, None), (100, 1, None), (100000, 4, None), (1, 1, None), (10, 1, 2)]:
        groups = job.plan_ranges(files, ipp, slots, parts)
        assert all(groups), "no empty task"
        # Every byte of every key list in exactly one range, in order.
        flat = [(r.location, r.start, r.end) for g in groups for r in g]
        for f in files:
            mine = [(a, b) for loc, a, b in flat if loc == f.location]
            assert mine[0][0] == 0 and mine[-1][1] == f.size, (ipp, mine)
            assert all(x[1] == y[0] for x, y in zip(mine, mine[1:], strict=False)), (ipp, mine)
        # A task's adjacent blocks of one file are one range.
        for g in groups:
            assert all(not (x.location == y.location and x.end == y.start) for x, y in zip(g, g[1:], strict=False))

    def sizes(ipp, slots=1, parts=None):
        return [sum(r.end - r.start for r in g) for g in job.plan_ranges(files, ipp, slots, parts)]

    assert sizes(200) == [200, 173]  # 373 lines in ceil(373 / 200) = 2, cut at the block crossing the half
    assert sizes(100000, 4) == [100, 100, 53, 120]  # one per task slot, no more than the blocks allow
    # Never more tasks than blocks (8): here 6, the three 1-line blocks in one.
    assert sizes(1) == sizes(1, 1, 50) == [100, 100, 50, 3, 100, 20]
    assert job.plan_ranges([], 10, 2) == []


def test_a_key_list_cut_anywhere_loses_and_repeats_no_line(fruits_bin, tmp_path):
    """Ranges read by the real `fruits cp --bytes`, cut at random bytes
    (inside lines, at line ends, in a multi-byte character), with lines
    longer than the read-ahead: together, the key list, line for line."""
    rng = random.Random(7)
    lines = [f"s3://b/photos/{'x' * rng.choice([1, 5, 40, 9000])}-{i}-é\r.jpg" for i in range(60)]
    text = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "keys.txt"
    path.write_bytes(text)
    s = spec(fruits_bin, tmp_path, "0" * 64)
    env = job.child_env(1)
    for trial in range(4):
        cuts = sorted({0, len(text), *rng.sample(range(1, len(text)), 6 + trial)})
        ranges = [job.KeyRange(str(path), a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
        got = b"".join(job.range_text(r, s, env) for r in ranges)
        assert got == text, cuts
    # The last line without its newline is read too; a range inside one line gives nothing or all of it.
    path.write_bytes(text[:-1])
    assert job.range_text(job.KeyRange(str(path), 0, len(text) - 1), s, env) == text[:-1]
    assert job.range_text(job.KeyRange(str(path), 3, 5), s, env) == b""
    # What a task is given reads as the keys: key_lines' rules (a trailing \r dropped).
    keys = job.task_keys([job.KeyRange(str(path), 0, 100), job.KeyRange(str(path), 100, len(text))], s, env)
    assert keys == [line.rstrip("\r") for line in lines]


def test_a_key_list_is_planned_from_its_size_and_first_bytes_not_read(fruits_bin, tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("".join(f"s3://b/p/{i:08d}.jpg\n" for i in range(25000)))  # 22 bytes a line
    s = spec(fruits_bin, tmp_path, "0" * 64)
    recorder, calls = recording_fruits(fruits_bin, tmp_path / "calls")
    f = job.key_list_file(dataclasses.replace(s, fruits=recorder), str(path), job.child_env(1))
    # As many blocks as LONGEST_LINE allows (134), up to MARKS + 1.
    assert (f.size, f.lines, f.step, len(f.marks)) == (25000 * 22, 25000, 186, 133)
    assert f.marks == tuple(25000 * 22 * i // 134 for i in range(1, 134)), "at equal bytes"
    args = [c["args"] for c in calls()]
    assert [a[0] for a in args] == ["cp", "cp"] and "--size" in args[0] and "0..65536" in args[1], args


def test_a_folder_is_listed_in_slices_that_add_up_to_fruits_list(fruits_bin, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE, photos)
    for extra in ["top.jpg", "Training/beside.jpg", "Training/notes.txt"]:
        shutil.copy(os.path.join(SAMPLE, "Test", "Kiwi", "f0_100.jpg"), photos / extra)
    s = spec(fruits_bin, tmp_path, "0" * 64)
    env = job.child_env(1)
    whole = subprocess.run([fruits_bin, "list", str(photos)], check=True, capture_output=True, text=True).stdout
    # Slices wanted (per slot x slots) against the split/ and label/ folders there are.
    for per_slot, slots, depth in [(1, 2, 1), (4, 1, 2), (4, 100, 2)]:
        monkeypatch.setattr(job, "LISTING_SLICES_PER_SLOT", per_slot)
        bounds = job.listing_bounds(s, str(photos), slots, env)
        assert {b.count("/") for b in bounds} == set(range(1, depth + 1)), bounds
        slices = job.listing_slices(bounds)
        listed = [job.list_slice(i, sl, str(photos), s) for i, sl in enumerate(slices)]
        text = "".join(open(r["location"], encoding="utf-8").read() for r in listed if r["lines"])
        assert text == whole, (slots, bounds)
        assert sum(r["not_images"] for r in listed) == 1, "notes.txt, counted once"
        assert all(r["step"] == 1 and len(r["marks"]) == max(r["lines"] - 1, 0) for r in listed), "a mark a line"
    # A slice's marks: at line starts, evenly, at most MARKS.
    many = tmp_path / "many" / "Training" / "Kiwi"
    many.mkdir(parents=True)
    for i in range(2100):
        os.link(photos / "top.jpg", many / f"{i:05d}.jpg")
    r = job.list_slice(0, (None, None), str(tmp_path / "many"), s)
    body = open(r["location"], "rb").read()
    assert (r["lines"], r["size"], r["step"], len(r["marks"])) == (2100, len(body), 3, 699)
    assert [body[: m].count(b"\n") for m in r["marks"]] == list(range(3, 2100, 3))
    assert all(body[m - 1] == 10 for m in r["marks"])


def shards_of(rows):
    return [job.Shard(part=i, rows=n, location=f"s3://b/shards/part-{i:05d}-0123456789abcdef.parquet")
            for i, n in enumerate(rows)]


def test_shards_are_grouped_whole_in_order_by_their_photo_counts():
    def plan(rows, ipp, slots=1, parts=None):
        """The planned groups, as the photo counts of their shards."""
        shards = shards_of(rows)
        groups = job.plan_shards(shards, ipp, slots, parts)
        assert [loc for g in groups for loc in g] == [sh.location for sh in shards], "every shard once, in order"
        assert all(groups), "no empty group"
        by = {sh.location: sh.rows for sh in shards}
        return [[by[loc] for loc in g] for g in groups]

    # Exact fits: a group fills up to the target and closes.
    assert plan([4, 4, 4, 4], 8) == [[4, 4], [4, 4]]
    assert plan([4, 4, 4, 4, 3], 8) == [[4, 4], [4, 4], [3]]
    assert plan([5, 3, 8, 1, 7], 8) == [[5, 3], [8], [1, 7]]
    assert plan([8], 8) == [[8]]
    # One huge shard: a task of its own wherever it is, never split.
    assert plan([100], 10) == [[100]]
    assert plan([3, 100, 2, 2], 10) == [[3], [100], [2, 2]]
    assert plan([100, 1, 1], 10) == [[100], [1, 1]]
    assert plan([1, 1, 100], 10) == [[1, 1], [100]]
    assert plan([100, 100], 10) == [[100], [100]]
    # Many tiny ones: --images-per-partition photos a task.
    assert plan([1] * 1000, 100) == [[1] * 100] * 10
    assert plan([1] * 25, 10) == [[1] * 10, [1] * 10, [1] * 5]
    # Every task slot gets work when there are shards enough (the target drops
    # to photos / slots), and never more groups than shards.
    assert plan([4] * 4, 2000, slots=2) == [[4, 4], [4, 4]]
    assert plan([4] * 4, 2000, slots=8) == [[4]] * 4
    # --partitions: about photos / partitions each.
    assert plan([4] * 6, 2000, parts=3) == [[4, 4]] * 3
    assert plan([4] * 6, 2000, parts=1) == [[4] * 6]
    assert plan([4] * 6, 2000, parts=50) == [[4]] * 6
    # A shard of no photos joins the group it falls in: no task of nothing.
    assert plan([0, 8, 0, 8, 0], 8) == [[0, 8, 0], [8, 0]]
    assert plan([0, 0], 8) == [[0, 0]]
    assert job.plan_shards([], 8, 2) == []
    # Any shards: no group over the target but a lone bigger shard, and a
    # group closes only when its next shard would take it over.
    rng = random.Random(7)
    for _ in range(300):
        rows = [rng.choice([0, 1, 2, 3, 5, 8, 13, 40]) for _ in range(rng.randint(1, 40))]
        ipp = rng.randint(1, 30)
        groups = plan(rows, ipp)
        for g, after in zip(groups, groups[1:] + [None], strict=True):
            assert sum(g) <= ipp or len([n for n in g if n]) == 1, (rows, ipp, groups)
            if after is not None:
                first = next(n for n in after if n)
                assert sum(g) + first > ipp, (rows, ipp, groups)


def test_shard_lines_are_parts_list_lines():
    text = "1\t4\ts3://b/a\tb/part-00001-x.parquet\r\n\n0\t3\ts3://b/a\tb/part-00000-x.parquet\n"
    assert job.shard_lines(text) == [job.Shard(0, 3, "s3://b/a\tb/part-00000-x.parquet"),
                                     job.Shard(1, 4, "s3://b/a\tb/part-00001-x.parquet")]
    for bad in ("0\ts3://b/part-00000-x.parquet\n", "0\t\u00b2\ts3://b/p.parquet\n"):
        with pytest.raises(RuntimeError, match="not part, rows, file"):
            job.shard_lines(bad)


def pack(fruits_bin, source, out, *flags):
    subprocess.run([fruits_bin, "pack", "--input", str(source), "--output", str(out)] + list(flags),
                   check=True, capture_output=True)
    return str(out)


def test_shards_are_listed_by_fruits_parts_list_not_photo_by_photo(fruits_bin, tmp_path):
    shards_dir = pack(fruits_bin, SAMPLE, tmp_path / "shards", "--shard-rows", "4")
    recorder, calls = recording_fruits(fruits_bin, tmp_path / "calls")
    s = job.TaskSpec(recorder, str(tmp_path / "run"), "mobilenetv2", "w", "0" * 64, "unit", 1, False, 0.5, (),
                     shards=True)
    shards = job.list_shards(s, shards_dir, job.child_env(1))
    assert [(sh.part, sh.rows) for sh in shards] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 3)]
    for sh in shards:
        m = json.load(open(os.path.join(shards_dir, "_fruits", f"part-{sh.part:05d}.manifest.json")))
        rows = next(f for f in m["files"] if f["role"] == "rows")
        assert sh.location == os.path.join(shards_dir, rows["name"]) and sh.rows == rows["rows"]
    # Two commands: the complete parts, and the first one's manifest (its kind); no `fruits list`,
    # no photo.
    assert [c["args"][:2] for c in calls()] == [["parts", "list"], ["cp", shards_dir + "/_fruits/part-00000"
                                                                        ".manifest.json"]]
    assert calls()[0]["args"] == ["parts", "list", shards_dir]
    with pytest.raises(RuntimeError, match="no complete shards in"):
        job.list_shards(s, str(tmp_path / "nothing"), job.child_env(1))


def test_the_executor_function_featurises_whole_shards_as_the_loose_photos(fruits_bin, tmp_path, weights):
    shards_dir = pack(fruits_bin, SAMPLE, tmp_path / "shards", "--shard-rows", "4")
    sha = job.sha256_of(weights)
    env = job.child_env(2)
    shards = job.list_shards(spec(fruits_bin, tmp_path, sha), shards_dir, env)
    groups = job.plan_shards(shards, 8, 1)
    assert [len(g) for g in groups] == [2, 2, 1]
    s = spec(fruits_bin, tmp_path, sha, shards=True)
    reports = [job.featurize_partition(i, g, s, weights) for i, g in enumerate(groups)]
    assert [(r["part"], r["status"], r["inputs"], r["featurised"]) for r in reports] == [
        (0, "done", 8, 8), (1, "done", 8, 8), (2, "done", 3, 3)]
    assert [(r["shards"], r["shard_files"], r["keys"]) for r in reports] == [(len(g), g, 0) for g in groups]
    # The rows: every photo once, named by its own path, bit-equal to featurising the loose photos.
    loose = job.featurize_partition(
        0, sorted(os.path.join(d, f) for d, _, fs in os.walk(SAMPLE) for f in fs),
        spec(fruits_bin, tmp_path, sha, output=str(tmp_path / "loose")), weights)
    assert loose["featurised"] == 19

    def rows(folder, parts):
        out = {}
        for n in parts:
            m = json.load(open(os.path.join(folder, "features", "_fruits", f"part-{n:05d}.manifest.json")))
            name = next(f["name"] for f in m["files"] if f["role"] == "rows")
            for r in pq.read_table(os.path.join(folder, "features", name)).to_pylist():
                assert r["path"] not in out, r["path"]
                out[r["path"]] = r
        return out

    assert rows(str(tmp_path / "run"), range(3)) == rows(str(tmp_path / "loose"), [0])
    # --resume: a complete part is skipped, and still counts its shards.
    again = job.featurize_partition(1, groups[1], spec(fruits_bin, tmp_path, sha, shards=True, resume=True), weights)
    assert (again["status"], again["inputs"], again["shards"]) == ("skipped", 8, 2)
    assert job.stale_parts([again], groups, shards) == []
    # ... unless shards packed since join it: then the driver refuses to skip it (the run fails).
    assert job.stale_parts([again], [groups[0], groups[1] + groups[2]], shards) == [1]
    assert job.stale_parts([dict(again, status="done")], [groups[0], groups[1] + groups[2]], shards) == []
    # A folder of other parts is no folder of shards: refused on the driver, before any task.
    with pytest.raises(RuntimeError, match="parts of kind 'features', not shards"):
        job.list_shards(s, str(tmp_path / "run" / "features"), env)


def test_the_default_run_id_names_the_output_and_is_stable():
    a = job.default_run_id("s3://fruits-demo/runs/run-1/")
    assert a == job.default_run_id("s3://fruits-demo/runs/run-1") and a.startswith("run-1-")
    assert a != job.default_run_id("s3://other/runs/run-1/")
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", job.default_run_id("/tmp/a b/ü")), "a valid --run-id"


def test_a_child_gets_an_explicit_environment():
    environ = {"AWS_ACCESS_KEY_ID": "k", "AWS_ENDPOINT_URL": "http://x", "SECRET_OF_THE_NODE": "no",
               "PYSPARK_GATEWAY_SECRET": "no", "HOME": "/home/hadoop"}
    env = job.child_env(4, environ)
    assert env["RAYON_NUM_THREADS"] == "4" and env["AWS_ACCESS_KEY_ID"] == "k" and env["HOME"] == "/home/hadoop"
    assert "SECRET_OF_THE_NODE" not in env and "PYSPARK_GATEWAY_SECRET" not in env


def spec(fruits_bin, tmp_path, sha, **kw):
    fields = dict(fruits=fruits_bin, output=str(tmp_path / "run"), model="mobilenetv2", weights_name="w",
                  weights_sha256=sha, run_id="unit", threads=2, resume=False, max_rejected=0.5, global_flags=())
    fields.update(kw)
    return job.TaskSpec(**fields)


@pytest.fixture
def weights(fruits_bin, tmp_path):
    w = tmp_path / "w.safetensors"
    subprocess.run([fruits_bin, "weights", "init", "--model", "mobilenetv2", "--seed", "2", "--out", str(w)],
                   check=True, capture_output=True)
    return str(w)


def test_the_executor_function_featurises_its_part_and_reports(fruits_bin, tmp_path, weights):
    keys = sorted(os.path.join(d, f) for d, _, fs in os.walk(SAMPLE) for f in fs)[:7] + ["/no/such/photo.jpg"]
    s = spec(fruits_bin, tmp_path, job.sha256_of(weights))
    r = job.featurize_partition(3, keys, s, weights, attempt=1)
    assert (r["part"], r["status"], r["inputs"], r["featurised"], r["rejected"]) == (3, "done", 8, 7, 1)
    assert r["rejected_by_kind"] == {"unreadable": 1}
    assert r["task_attempt"] == 1 and r["weights_path"] == weights and r["keys"] == 8
    manifest = json.load(open(tmp_path / "run" / "features" / "_fruits" / "part-00003.manifest.json"))
    assert manifest["run"]["fruits.run_id"] == "unit" and manifest["counts"]["featurised"] == 7
    # --resume: the part is complete, the task skips it.
    again = job.featurize_partition(3, keys, spec(fruits_bin, tmp_path, job.sha256_of(weights), resume=True),
                                    weights)
    assert again["status"] == "skipped"


class LocalSpark:
    """`parallelize`, `map` and `collect` in this process: the executor
    functions called as Spark calls them, each job's task count noted."""

    def __init__(self):
        self.tasks = []

    def parallelize(self, items, slices):
        self.tasks.append(slices)
        return LocalRDD(list(items))


class LocalRDD:
    def __init__(self, items):
        self.items = items

    def map(self, f):
        return LocalRDD([f(x) for x in self.items])

    def collect(self):
        return self.items


def test_statistics_are_merged_as_a_tree_and_fit_as_the_flat_merge(fruits_bin, tmp_path, weights):
    photos = sorted(os.path.join(d, f) for d, _, fs in os.walk(SAMPLE) for f in fs)[:10]
    s = spec(fruits_bin, tmp_path, job.sha256_of(weights))
    for part in range(5):
        job.featurize_partition(part, photos[part::5], s, weights)
    sc = LocalSpark()
    files, levels = job.merge_tree(sc, [4, 3, 2, 1, 0], s, 2)
    # 5 parts -> 3 files -> 2 files: two levels of tasks, 2 files for the driver.
    assert (levels, sc.tasks, len(files)) == (2, [3, 2], 2), (levels, sc.tasks, files)
    assert all("/stats/level-2/merge-0000" in f for f in files), files
    tree = job.fit_pca(s, ["--k", "3"], files, job.child_env(2))
    assert tree["n_samples"] == 10 and tree["parts"] == ["parts 0-4"], tree["parts"]
    subprocess.run([fruits_bin, "pca", "fit", "--features", s.folder("features"), "--output", str(tmp_path / "flat"),
                    "--k", "3"], check=True, capture_output=True)
    flat = json.load(open(tmp_path / "flat" / "pca.json"))
    for t, f in zip(tree["explained_variance"], flat["explained_variance"], strict=True):
        assert abs(t - f) <= 1e-10 * abs(f), (tree["explained_variance"], flat["explained_variance"])
    assert job.part_ranges([8, 0, 1, 2, 5, 7]) == "0-2,5,7-8"


def test_an_executor_copy_that_does_not_hash_to_the_staged_sha256_fails_the_task(fruits_bin, tmp_path, weights):
    s = spec(fruits_bin, tmp_path, "0" * 64)
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        job.featurize_partition(0, [os.path.join(SAMPLE, "Test", "Kiwi", "f0_100.jpg")], s, weights)
    assert not (tmp_path / "run" / "features" / "_fruits").exists(), "nothing committed"


def test_the_report_renders_for_a_person():
    parts = [{"part": i, "status": "done", "host": f"node-{i % 2}", "device": "cpu (native engine, f32, avx2)",
              "inputs": 10, "featurised": 9, "rejected": 1, "not_images": 0, "duplicates": 0, "seconds": 2.0,
              "weights_path": f"/w{i % 2}/x.safetensors"} for i in range(4)]
    staged = job.Staged(name="x", sha256="ab" * 32, uri="hdfs:///fruits/weights/x", source="s3://b/w")
    s = job.TaskSpec("f", "s3://b/runs/r/", "mobilenetv2", "x", "ab" * 32, "r1", 4, False, 0.01, ())
    report = job.summarise(parts, {"featurize_s": 4.0, "total_s": 60.0}, {"n_components": 5, "n_samples": 36},
                           staged, s, 1.7, "1 x m5.xlarge + 2 x g4dn.xlarge")
    assert report["images"]["featurised"] == 36 and report["nodes"]["node-0"]["images_per_s"] == 5.0
    assert report["cost"]["this_run_usd"] == round(1.7 * 60 / 3600, 4)
    text = job.render(report)
    assert "36 of 40 images featurised" in text and "node-1: 20 images in 2 parts" in text
    assert "2 executor copies" in text and "$1.700/h" in text
    assert report["shards"] == 0 and "shards" not in text
    # From shards: the photos counted as ever, and the shards read.
    for p in parts:
        p.update({"shards": 3, "shard_files": ["s3://b/shards/part-00000-a.parquet"] * 3, "keys": 0})
    report = job.summarise(parts, {"featurize_s": 4.0, "total_s": 60.0}, {"n_components": 5, "n_samples": 36},
                           staged, s, None, None)
    assert report["shards"] == 12 and report["images"]["inputs"] == 40
    assert "36 of 40 images from 12 shards featurised" in job.render(report)


# Names that str.splitlines() cuts in two and the binary does not.
ODD_NAMES = ["a\rb", "c\x0cd", "e\x85f", "g\u2028h"]


def test_keys_are_lines_ending_at_newline_only_as_the_binary_reads_them(fruits_bin, tmp_path, weights):
    folder = tmp_path / "photos" / "Training" / "Kiwi"
    folder.mkdir(parents=True)
    for name in ODD_NAMES:
        shutil.copy(os.path.join(SAMPLE, "Test", "Kiwi", "f0_100.jpg"), folder / f"{name}.jpg")
    expected = sorted(str(folder / f"{name}.jpg") for name in ODD_NAMES)
    s = spec(fruits_bin, tmp_path, job.sha256_of(weights))
    env = job.child_env(2)
    # `fruits list` of the folder refuses the control characters (\r, \x0c,
    # \x85), naming them: a line of its output could not hold them; the
    # listing task fails (and the run with it), naming them.
    with pytest.raises(RuntimeError, match="hold a control character") as refused:
        job.list_slice(0, (None, None), str(tmp_path / "photos"), s)
    assert "a\\rb.jpg" in str(refused.value) and "c\\u{c}d.jpg" in str(refused.value), refused.value
    # A line separator is no control character: listed whole, one key a file.
    lone = tmp_path / "lone" / "Training" / "Kiwi"
    lone.mkdir(parents=True)
    shutil.copy(folder / "g\u2028h.jpg", lone / "g\u2028h.jpg")
    r = job.list_slice(0, (None, None), str(tmp_path / "lone"), s)
    assert (r["lines"], r["not_images"]) == (1, 0)
    listed = job.task_keys([job.KeyRange(r["location"], 0, r["size"])], s, env)
    assert listed == [str(lone / "g\u2028h.jpg")]
    # A key list of them, one line ending "\r\n" and a line of white space only, as the binary reads it,
    # cut into ranges as the driver plans them.
    keys = tmp_path / "keys.txt"
    with open(keys, "w", encoding="utf-8", newline="") as f:
        f.write(expected[0] + "\r\n" + "\n".join(expected[1:]) + "\n\u2028\x85\n")
    ranges = job.plan_ranges([job.key_list_file(s, str(keys), env)], 1000, 3)
    from_list = job.task_keys([r for g in ranges for r in g], s, env)
    assert from_list == expected
    # Each one a whole path the binary reads: every image featurised, none rejected.
    r = job.featurize_partition(0, from_list, s, weights)
    assert (r["inputs"], r["featurised"], r["rejected"]) == (4, 4, 0), r


# A Spark Python worker in small: runs one featurize task, nothing else.
WORKER = """import json, sys
sys.path.insert(0, sys.argv[1])
from fruits_emr import featurize_job as job
task = json.load(open(sys.argv[2]))
spec = job.TaskSpec(**dict(task["spec"], global_flags=()))
print(json.dumps(job.featurize_partition(0, task["keys"], spec, task["weights"])), flush=True)
"""


def children(pid):
    """The pids whose parent is `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().split("\0")
    except OSError:
        return []


def alive(pid):
    """Running, not gone nor a zombie waiting for whoever inherited it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_fruits_child_dies_with_its_killed_python_worker_and_commits_nothing(fruits_bin, tmp_path, weights):
    photos = sorted(os.path.join(d, f) for d, _, fs in os.walk(SAMPLE) for f in fs)
    many = tmp_path / "many" / "Training" / "Kiwi"
    many.mkdir(parents=True)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)

    def task(name, n):
        """A worker featurising `n` photos (links to the sample's) on one thread."""
        for i in range(n):
            if not (many / f"{i:05d}.jpg").exists():
                os.link(photos[i % len(photos)], many / f"{i:05d}.jpg")
        keys = [str(many / f"{i:05d}.jpg") for i in range(n)]
        s = spec(fruits_bin, tmp_path, job.sha256_of(weights), output=str(tmp_path / name), threads=1)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"spec": dataclasses.asdict(s), "keys": keys, "weights": weights}))
        manifest = tmp_path / name / "features" / "_fruits" / "part-00000.manifest.json"
        return [sys.executable, str(worker), EMR, str(path)], manifest

    # Left alone, the worker's child commits its part: the test sees a commit. Enough photos for that
    # to take a few seconds on this machine.
    n = 500
    while True:
        argv, manifest = task(f"whole-{n}", n)
        start = time.time()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        took = time.time() - start
        assert done.returncode == 0 and json.loads(done.stdout)["featurised"] == n, done.stderr[-2000:]
        assert manifest.is_file()
        if took > 3 or n >= 32000:
            break
        n *= 4
    assert took > 3, f"{n} photos took {took:.1f} s: too short to kill the run midway"

    # Killed (SIGKILL, as Spark kills a worker) while its child works: the child dies with it, and nothing
    # is committed, even after the time the whole run took.
    argv, manifest = task("killed", n)
    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    while child is None and time.time() - start < 60:
        child = next((c for c in children(proc.pid) if "featurize" in cmdline(c)), None)
        time.sleep(0.01)
    assert child is not None, "the worker never started fruits featurize"
    time.sleep(1)
    assert alive(child) and not manifest.exists(), "the child must be at work when its worker is killed"
    proc.kill()
    proc.wait()
    deadline = time.time() + 2
    while alive(child) and time.time() < deadline:
        time.sleep(0.02)
    assert not alive(child), "fruits featurize outlived the worker that started it"
    time.sleep(max(0.0, start + took * 1.5 + 2 - time.time()))
    assert not manifest.exists(), "the killed worker's child committed its part"
