"""A features folder of N committed parts, made without featurising: each
part a few rows of random features (pyarrow), its statistics file (shift,
sum and upper Gram triangle in f64, as src/pca/stats.rs writes them) and its
manifest, as `fruits featurize` commits them. For benches/pca_merge.sh: a
PCA fit's cost is in the statistics files, not in the rows.

    python benches/stats_parts.py OUT PARTS WIDTH [ROWS_PER_PART]
"""

import hashlib
import json
import os
import struct
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RUN = {"fruits.model": "bench", "fruits.weights": "random:0", "fruits.preprocessing": "bench",
       "fruits.feature_dim": None, "fruits.dtype": "f32", "fruits.run_id": "bench"}


def safetensors(tensors, metadata):
    header, offset, blobs = {}, 0, []
    for name, values in tensors:
        blob = np.asarray(values, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": [len(blob) // 8], "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def entry(folder, role, name, data, rows):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
    return {"role": role, "name": name, "bytes": len(data), "rows": rows, "sha256": hashlib.sha256(data).hexdigest()}


def main(out, parts, width, rows):
    run = dict(RUN, **{"fruits.feature_dim": str(width)})
    os.makedirs(os.path.join(out, "_fruits"), exist_ok=True)
    rng = np.random.default_rng(0)
    scale = np.linspace(3.0, 0.1, width)
    upper = np.triu_indices(width)
    for part in range(parts):
        x = (rng.standard_normal((rows, width)) * scale).astype(np.float32)
        table = pa.table({
            "path": [f"s3://bench/photos/{part}/{i}.jpg" for i in range(rows)],
            "label": ["Apple"] * rows, "split": ["Training"] * rows,
            "features": pa.array(list(x), type=pa.list_(pa.float32())),
            "width": pa.array([100] * rows, pa.int32()), "height": pa.array([100] * rows, pa.int32()),
        }).replace_schema_metadata(run)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        shifted = x.astype(np.float64) - x[0].astype(np.float64)
        stats = safetensors([("n", [rows]), ("shift", x[0].astype(np.float64)), ("sum", shifted.sum(0)),
                             ("gram_upper", (shifted.T @ shifted)[upper])], dict(run, rows=str(rows)))
        stem = f"part-{part:05d}"
        files = [entry(out, "rows", f"{stem}-bench.parquet", sink.getvalue().to_pybytes(), rows),
                 entry(out, "stats", f"_fruits/{stem}-bench.stats.safetensors", stats, rows)]
        manifest = {"format": "fruits-part/1", "kind": "features", "part": part, "attempt": "bench",
                    "written_at": "2026-12-05T00:00:00Z", "fruits_version": "bench", "run": run,
                    "counts": {"inputs": rows, "featurised": rows, "rejected": 0, "not_images": 0, "duplicates": 0},
                    "files": files}
        with open(os.path.join(out, "_fruits", f"{stem}.manifest.json"), "w") as f:
            json.dump(manifest, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 4)
