"""The peer of `fruits bench search`: what a data scientist would write,
numpy's matrix product over every vector and argpartition for the k best.
usage: search_numpy.py VECTORS DIM QUERIES K"""
import sys
import time

import numpy as np

n, dim, queries, k = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(1)
x = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
q = rng.uniform(-1, 1, (queries, dim)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)


def nearest(qs):
    s = qs @ x.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1), axis=1)


nearest(q[:1])
times = []
for i in range(queries):
    t = time.perf_counter()
    nearest(q[i:i + 1])
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
t = time.perf_counter()
for i in range(0, queries, 32):
    nearest(q[i:i + 32])
batched = (time.perf_counter() - t) * 1e3 / queries
p50 = times[len(times) // 2]
print(f"numpy {np.__version__}: {n} vectors x {dim} f32, k {k}: one query per call p50 {p50:.2f} ms, "
      f"p99 {times[int(0.99 * (len(times) - 1))]:.2f} ms; 32 queries per call {batched:.2f} ms per query")
