"""The Python snippets of docs/GUIDE.md's "Reading the outputs" run as a
reader would run them: after a real `fruits featurize` of the sample, in
the folder holding out/features, one after the other in one namespace,
with pyarrow, DuckDB and a local Spark. They must print what the part
holds (19 rows of 1280 floats)."""
import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def snippets():
    text = (REPO / "docs/GUIDE.md").read_text()
    section = text.split("## Reading the outputs", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_reading_snippets_run_on_a_real_part(tmp_path, monkeypatch):
    fruits = os.environ["FRUITS_BIN"]
    subprocess.run([fruits, "featurize", "--quiet", "--weights", "random:0", "--device", "cpu",
                    "--input", str(REPO / "tests/data/fruits-360-sample"), "--output", str(tmp_path / "out/features")],
                   check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    found = snippets()
    assert len(found) == 3, "pyarrow, DuckDB and Spark"
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in found:
            exec(compile(code, "docs/GUIDE.md", "exec"), namespace)
    namespace["spark"].stop()
    printed = out.getvalue()
    assert namespace["table"].num_rows == 19
    assert "19 list<element: float not null>" in printed, printed
    assert namespace["meta"][b"fruits.weights"] == b"random:0"
    assert len(namespace["features"][0]) == 1280
    assert sum(n for _, _, n, _ in namespace["per_label"]) == 19
    assert {d for *_, d in namespace["per_label"]} == {1280.0}
    # Spark's groupBy printed both splits of the sample: 14 Training, 5 Test.
    assert "split='Training', count=14" in printed and "split='Test', count=5" in printed, printed
