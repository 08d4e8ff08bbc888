"""PCA fit from many parts (issue 23): the flat fit, where the driver reads
every part's statistics file, against the tree of `fruits pca merge` tasks
(FAN_IN files a task, level after level) and a fit from the last level's
files, on the same folder in the same run. Prints the bytes and files the
driver reads and its seconds, the merges' seconds (the longest of each level
is the tree's wall time on a cluster with a slot per merge), and the largest
difference between the two fits' spectra.

    python benches/pca_merge.py FRUITS FOLDER FAN_IN K
"""

import json
import os
import re
import subprocess
import sys
import time


def run(args):
    t = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:4])}... failed:\n{proc.stderr}")
    return time.time() - t, proc.stderr


def ranges(parts):
    return f"{parts[0]}-{parts[-1]}"


def main(fruits, folder, fan_in, k):
    features = os.path.join(folder, "features")
    parts = sorted(int(n[5:10]) for n in os.listdir(os.path.join(features, "_fruits")) if n.endswith(".manifest.json"))
    flat = os.path.join(folder, "flat")
    flat_s, err = run([fruits, "pca", "fit", "--features", features, "--k", k, "--output", flat])
    flat_bytes = int(re.search(r"statistics files, (\d+) bytes", err).group(1))
    items, level, merges, wall, total = parts, 0, 0, 0.0, 0.0
    while level == 0 or len(items) > fan_in:
        level += 1
        out, longest = [], 0.0
        for g, start in enumerate(range(0, len(items), fan_in)):
            group = items[start:start + fan_in]
            dest = os.path.join(folder, "stats", f"level-{level}", f"merge-{g:05d}.stats.safetensors")
            what = ["--features", features, "--parts", ranges(group)] if level == 1 else ["--stats"] + group
            s, _ = run([fruits, "pca", "merge"] + what + ["--output", dest])
            longest, total, merges = max(longest, s), total + s, merges + 1
            out.append(dest)
        wall += longest
        items = out
    tree_s, err = run([fruits, "pca", "fit", "--features", features, "--stats"] + items
                      + ["--k", k, "--output", os.path.join(folder, "tree")])
    tree_bytes = int(re.search(r"statistics files, (\d+) bytes", err).group(1))
    spectra = [json.load(open(os.path.join(folder, m, "pca.json")))["explained_variance"] for m in ("flat", "tree")]
    diff = max(abs(a - b) / abs(b) for a, b in zip(*spectra, strict=True))
    print(f"parts {len(parts)}, fan-in {fan_in}: {level} levels, {merges} merge processes "
          f"({total:.2f} s one after another; longest per level summed: {wall:.2f} s)")
    print("| fit | files the driver reads | MB | driver s |")
    print("| --- | --- | --- | --- |")
    print(f"| flat (`pca fit --features`) | {len(parts)} | {flat_bytes / 1e6:.1f} | {flat_s:.2f} |")
    print(f"| tree (`pca fit --stats`) | {len(items)} | {tree_bytes / 1e6:.1f} | {tree_s:.2f} |")
    print(f"ratios tree/flat: files {len(items) / len(parts):.4f}, bytes {tree_bytes / flat_bytes:.5f}, "
          f"driver seconds {tree_s / flat_s:.3f}")
    print(f"largest relative difference between the spectra: {diff:.1e}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
