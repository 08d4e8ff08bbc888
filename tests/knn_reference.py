"""Independent reference for `fruits index` / `identify`: nearest neighbours
and the weighted vote computed with numpy from the features Parquet (read by
pyarrow), as the docs define them, with none of the Rust code.

usage: knn_reference.py FEATURES_PARQUET TRAIN_SPLIT TEST_SPLIT K MIN_SCORE [PCA_DIR | none]
(no PCA_DIR: centred on the Training rows' mean; `none`: raw features)
prints JSON: per test row (by path): neighbours (path, similarity), the
ranked labels with their vote shares, unknown; and top-1/top-5 accuracy.
"""
import json
import sys

import numpy as np
import pyarrow.parquet as pq

path, train_split, test_split, k, min_score = sys.argv[1:6]
k, min_score = int(k), float(min_score)
pca_dir = sys.argv[6] if len(sys.argv) > 6 else None

t = pq.read_table(path).to_pydict()
x = np.array(t["features"], dtype=np.float64)
train = [i for i, s in enumerate(t["split"]) if s == train_split and t["label"][i]]
test = [i for i, s in enumerate(t["split"]) if s == test_split and t["label"][i]]

if pca_dir == "none":

    def project(v):
        return v
elif pca_dir:
    comps = np.array(pq.read_table(f"{pca_dir}/components.parquet").to_pydict()["vector"], dtype=np.float64)
    center = pq.read_table(f"{pca_dir}/center.parquet").to_pydict()
    mean = np.array(center["mean"])
    scale = center["scale"]
    scale = np.array(scale) if scale[0] is not None else 1.0

    def project(v):
        return ((v - mean) / scale) @ comps.T
else:
    mean = x[train].mean(axis=0)

    def project(v):
        return v - mean


def unit(v):
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(n > 0, v / np.where(n > 0, n, 1), 0)


index = unit(project(x[train]))
queries = unit(project(x[test]))
sims = queries @ index.T
out, top1, top5 = {}, 0, 0
for qi, row in enumerate(test):
    order = sorted(range(len(train)), key=lambda j: (-sims[qi, j], j))[:k]
    votes = {}
    for j in order:
        lab = t["label"][train[j]]
        votes[lab] = votes.get(lab, 0.0) + max(sims[qi, j], 0.0)
    total = sum(votes.values())
    scored = [(lab, v / total) for lab, v in votes.items() if v > 0] if total > 0 else []
    ranked = sorted(scored, key=lambda lv: (-lv[1], lv[0]))
    unknown = not ranked or ranked[0][1] < min_score
    truth = t["label"][row]
    top1 += (not unknown and ranked[0][0] == truth)
    top5 += any(lab == truth for lab, _ in ranked[:5])
    out[t["path"][row]] = {
        "label": truth,
        "neighbours": [{"path": t["path"][train[j]], "similarity": float(sims[qi, j])} for j in order],
        "ranked": [{"label": lab, "score": s} for lab, s in ranked],
        "unknown": bool(unknown),
    }
print(json.dumps({"rows": out, "top1": top1 / len(test), "top5": top5 / len(test), "n": len(test)}))
