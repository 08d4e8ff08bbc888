"""Writes synthetic features parts for benches/pca.sh: ROWS rows of DIM float32
(a decaying spectrum plus noise), in parts of PART_ROWS, with fruits' metadata.

    python benches/make_features.py OUT_DIR ROWS [DIM] [PART_ROWS] [LABELS]

LABELS > 0: each row labelled `fruit-<i mod LABELS>` (split Training), for an index.
"""
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

out, rows = Path(sys.argv[1]), int(sys.argv[2])
dim = int(sys.argv[3]) if len(sys.argv) > 3 else 1280
part_rows = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
labels = int(sys.argv[5]) if len(sys.argv) > 5 else 0
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
basis = rng.standard_normal((64, dim)).astype(np.float32)
scales = (1.0 / np.arange(1, 65)).astype(np.float32)
meta = {"fruits.model": "synthetic", "fruits.weights": "synthetic:0",
        "fruits.feature_dim": str(dim), "fruits.preprocessing": "none", "fruits.dtype": "f32",
        "fruits.run_id": "synthetic"}
for p, start in enumerate(range(0, rows, part_rows)):
    n = min(part_rows, rows - start)
    x = (rng.standard_normal((n, 64)).astype(np.float32) * scales) @ basis
    x += 0.01 * rng.standard_normal((n, dim)).astype(np.float32)
    values = pa.array(x.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    features = pa.ListArray.from_arrays(offsets, values).cast(pa.list_(pa.field("element", pa.float32(), False)))
    table = pa.table({
        "path": [f"synthetic/{start + i}" for i in range(n)],
        "label": pa.array([f"fruit-{(start + i) % labels}" if labels else None for i in range(n)], pa.string()),
        "split": pa.array(["Training" if labels else None] * n, pa.string()),
        "features": features,
        "width": pa.array(np.ones(n, np.int32)),
        "height": pa.array(np.ones(n, np.int32)),
    }).replace_schema_metadata(meta)
    pq.write_table(table, out / f"part-{p:05d}.parquet", compression="zstd")
