"""Writes Parquet files as another tool might, for tests/test_bad_inputs.rs:
each one wrong in one way a reader must refuse with an error naming it.

    foreign_parts.py part KIND PATH      a features part, wrong in KIND's way
    foreign_parts.py narrow PATH         components.parquet with one vector a value short
"""
import sys

import pyarrow as pa
import pyarrow.parquet as pq

DIM = 8


def meta(dim=DIM):
    return {b"fruits.model": b"mobilenetv2", b"fruits.weights": b"random:0", b"fruits.feature_dim": str(dim).encode()}


def table(features, path=None, dim=DIM, feature_type=None):
    feature_type = feature_type if feature_type is not None else pa.list_(pa.float32())
    n = len(features)
    path = path if path is not None else pa.array([f"/photos/Kiwi/{i}.jpg" for i in range(n)])
    t = pa.table(
        {
            "path": path,
            "label": pa.array(["Kiwi"] * n),
            "split": pa.array([None] * n, pa.string()),
            "features": pa.array(features, feature_type),
            "width": pa.array([100] * n, pa.int32()),
            "height": pa.array([100] * n, pa.int32()),
        }
    )
    return t.replace_schema_metadata(meta(dim))


def part(kind, out):
    rows = [[float(i + j) for j in range(DIM)] for i in range(5)]
    if kind in ("snappy", "gzip", "lz4"):  # valid parts, as Spark, pyarrow, DuckDB write them
        pq.write_table(table(rows), out, compression=kind)
    elif kind == "double_features":
        pq.write_table(table(rows, feature_type=pa.list_(pa.float64())), out)
    elif kind == "dim0":
        pq.write_table(table(rows, dim=0), out)
    elif kind == "null_row":
        pq.write_table(table(rows[:2] + [None] + rows[3:]), out)
    elif kind == "null_value":
        rows[1][3] = None
        pq.write_table(table(rows), out)
    elif kind == "short_row":
        rows[4] = rows[4][:-1]
        pq.write_table(table(rows), out)
    elif kind == "null_path":
        pq.write_table(table(rows, path=pa.array(["/a.jpg", None, "/c.jpg", "/d.jpg", "/e.jpg"])), out)
    elif kind == "int_path":
        pq.write_table(table(rows, path=pa.array([1, 2, 3, 4, 5], pa.int64())), out)
    elif kind == "large_list":
        pq.write_table(table(rows, feature_type=pa.large_list(pa.float32())), out)
    elif kind == "not_parquet":
        open(out, "wb").write(b"path,features\n/a.jpg,1 2 3\n")
    elif kind == "bad_footer":
        pq.write_table(table(rows), out)
        data = bytearray(open(out, "rb").read())
        n = int.from_bytes(data[-8:-4], "little")
        for i in range(len(data) - 8 - n, len(data) - 8, 7):  # scribble over the footer
            data[i] ^= 0x5A
        open(out, "wb").write(bytes(data))
    elif kind == "huge_footer_length":
        pq.write_table(table(rows), out)
        data = bytearray(open(out, "rb").read())
        data[-8:-4] = (0x7FFFFFF0).to_bytes(4, "little")
        open(out, "wb").write(bytes(data))
    else:
        sys.exit(f"unknown kind {kind}")


def narrow(path):
    t = pq.read_table(path)
    vectors = t.column("vector").to_pylist()
    vectors[1] = vectors[1][:-1]
    i = t.schema.get_field_index("vector")
    t = t.set_column(i, t.schema.field(i), pa.array(vectors, t.schema.field(i).type))
    pq.write_table(t, path)


if __name__ == "__main__":
    if sys.argv[1] == "part":
        part(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "narrow":
        narrow(sys.argv[2])
    else:
        sys.exit(__doc__)
