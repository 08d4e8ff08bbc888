"""Independent side of the shard tests (pyarrow, hashlib; none of fruits' code).

    shard_helper.py read SHARD          a shard as JSON: schema, row groups (rows,
                                        bytes, statistics of content), and each row's
                                        path, label, split, length, sha256 column and
                                        the sha256 of its content
    shard_helper.py spark DIR OUT       writes what Spark's binaryFile source gives
                                        for the files under DIR (path as a file: URI,
                                        modificationTime, length, content; no labels),
                                        as OUT/part-00000.parquet (snappy)
"""
import hashlib
import json
import os
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq


def read(path):
    pf = pq.ParquetFile(path)
    table = pf.read()
    content = table.column("content").to_pylist()
    groups = []
    for i in range(pf.metadata.num_row_groups):
        rg = pf.metadata.row_group(i)
        col = next(rg.column(c) for c in range(rg.num_columns) if rg.column(c).path_in_schema == "content")
        groups.append({"rows": rg.num_rows, "content_bytes": col.total_uncompressed_size,
                       "content_statistics": bool(col.statistics and col.statistics.has_min_max),
                       "compression": col.compression})
    rows = []
    for i in range(table.num_rows):
        row = {c: table.column(c)[i].as_py() for c in table.column_names if c not in ("content", "modificationTime")}
        row["content_sha256"] = hashlib.sha256(content[i]).hexdigest()
        rows.append(row)
    meta = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items() if not k.startswith(b"ARROW")}
    print(json.dumps({"schema": {f.name: str(f.type) for f in table.schema}, "row_groups": groups, "rows": rows,
                      "metadata": meta}))


def spark(root, out):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    data = [open(f, "rb").read() for f in files]
    table = pa.table({
        "path": ["file:" + os.path.abspath(f) for f in files],
        "modificationTime": pa.array([datetime.fromtimestamp(os.path.getmtime(f), timezone.utc) for f in files],
                                     pa.timestamp("us", tz="UTC")),
        "length": pa.array([len(d) for d in data], pa.int64()),
        "content": pa.array(data, pa.binary()),
    })
    os.makedirs(out, exist_ok=True)
    pq.write_table(table, os.path.join(out, "part-00000.parquet"), compression="snappy", row_group_size=8)


if __name__ == "__main__":
    {"read": read, "spark": spark}[sys.argv[1]](*sys.argv[2:])
