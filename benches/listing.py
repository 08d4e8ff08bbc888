"""The driver's listing (issue 23), as `featurize_job.list_in_slices` runs
it: the folder cut at its folders on the driver, each slice listed by
`fruits list --after/--before` on an executor (here: SLOTS threads, each
running the real executor function), against one sequential `fruits list`.
Checks that the slices' key files, in order, are the sequential listing.

    python benches/listing.py FRUITS ENDPOINT ROOT OUTPUT SLOTS SEQUENTIAL_KEYS_FILE SEQUENTIAL_SECONDS
"""

import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "emr"))
from fruits_emr import featurize_job as job  # noqa: E402


def main(fruits, endpoint, root, output, slots, sequential_file, sequential_s):
    flags = ("--s3-endpoint", endpoint, "--region", "eu-west-1")
    spec = job.TaskSpec(fruits=fruits, output=output, model="-", weights_name="-", weights_sha256="-",
                        run_id="bench", threads=1, resume=False, max_rejected=0.0, global_flags=flags)
    env = job.child_env(1)
    t = time.time()
    bounds = job.listing_bounds(spec, root, slots, env)
    slices = job.listing_slices(bounds)
    planned = time.time() - t
    with concurrent.futures.ThreadPoolExecutor(slots) as pool:
        listed = list(pool.map(lambda item: job.list_slice(item[0], item[1], root, spec), enumerate(slices)))
    parallel_s = time.time() - t
    keys = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in sorted(listed, key=lambda r: r["slice"]):
            if r["lines"]:
                local = os.path.join(tmp, "slice.txt")
                subprocess.run([fruits, *flags, "cp", r["location"], local], capture_output=True, env=env, check=True)
                with open(local, encoding="utf-8", errors="surrogateescape") as f:
                    keys += job.key_lines(f.read())
    with open(sequential_file, encoding="utf-8") as f:
        sequential = job.key_lines(f.read())
    same = keys == sequential
    n = len(sequential)
    print(f"{n} keys; {len(slices)} slices ({len(bounds)} folder bounds, found in {planned:.2f} s), {slots} at once")
    print("| listing | seconds | keys/s |")
    print("| --- | --- | --- |")
    print(f"| sequential (`fruits list`, one paginator) | {sequential_s:.2f} | {n / sequential_s:,.0f} |")
    print(f"| in slices (`list_in_slices`, {slots} tasks at once) | {parallel_s:.2f} | {n / parallel_s:,.0f} |")
    print(f"ratio parallel/sequential keys/s: {sequential_s / parallel_s:.2f}x; same keys in the same order: {same}")
    if not same:
        sys.exit("the slices do not add up to the sequential listing")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], float(sys.argv[7]))
