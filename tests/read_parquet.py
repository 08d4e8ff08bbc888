"""Independent reader for the tests: dumps a features Parquet file as JSON.

pyarrow reads everything; DuckDB re-reads it and must agree on the row count
and the feature lengths (a second, unrelated Parquet implementation).
"""
import json
import sys

import duckdb
import pyarrow.parquet as pq

path = sys.argv[1]
pf = pq.ParquetFile(path)
table = pf.read()
meta = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items() if not k.startswith(b"ARROW")}
con = duckdb.connect()
vector = "features" if "features" in table.column_names else "pca"
duck_rows, duck_min_len, duck_max_len = con.execute(
    f"SELECT count(*), min(len({vector})), max(len({vector})) FROM read_parquet(?)", [path]
).fetchone()
print(json.dumps({
    "rows": table.num_rows,
    "row_groups": pf.metadata.num_row_groups,
    "schema": {f.name: str(f.type) for f in table.schema},
    "nullable": {f.name: f.nullable for f in table.schema},
    "compression": pf.metadata.row_group(0).column(0).compression if pf.metadata.num_row_groups else None,
    "metadata": meta,
    "columns": {c: table.column(c).to_pylist() for c in table.column_names},
    "duckdb": {"rows": duck_rows, "min_len": duck_min_len, "max_len": duck_max_len},
}))
