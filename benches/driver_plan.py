"""The PySpark driver's planning, today's against the one before it, on a
key list of N synthetic keys (no photos): what the driver does before any
task featurises: read or size the keys, cut them into partitions, hand
them to Spark (`parallelize` and a count, local mode, 2 cores).

    .venv/bin/python benches/driver_plan.py {new|old} N KEYLIST FRUITS [OLD_DRIVER.py]

One measurement per process: prints one JSON line with the planning
seconds, the partitions, the Python driver's peak RSS (getrusage) and the
driver JVM's (VmHWM of the java child Spark started), in MiB. Called by
benches/driver_plan.sh, which makes the key lists and the table.
"""

import importlib.util
import json
import os
import resource
import sys
import time

# Photos a task, for both drivers: fruits-emr's default for a c5.2xlarge
# (emr/fruits_emr/prices.py). At the old 2,000, 100M keys are 50,000 tasks,
# and the count below would time Spark's scheduler of local mode, not the plan.
PER_TASK = int(os.environ.get("PER_TASK", "192000"))


def jvm_peak_mib() -> float:
    """VmHWM of this process's java children (PySpark's gateway JVM)."""
    peak = 0.0
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != me:
                    continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            continue
    return peak


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    which, n, keylist, fruits = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName(f"plan-{which}-{n}")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g").getOrCreate())
    sc = spark.sparkContext
    here = os.path.dirname(os.path.abspath(__file__))
    t = time.time()
    if which == "new":
        job = load(os.path.join(here, "..", "emr", "fruits_emr", "featurize_job.py"), "featurize_job")
        spec = job.TaskSpec(fruits, "/tmp/unused/", "mobilenetv2", "w", "0" * 64, "bench", 1, False, 0.01, ())
        files = [job.key_list_file(spec, keylist, job.child_env(1))]
        slices = job.plan_ranges(files, PER_TASK, 2)
    else:
        job = load(sys.argv[5], "featurize_job_old")
        spec = job.TaskSpec(fruits, "/tmp/unused/", "mobilenetv2", "w", "0" * 64, "bench", 1, False, 0.01, ())
        keys, _ = job.list_keys(spec, None, keylist, job.child_env(1))
        slices = job.plan_partitions(keys, PER_TASK, 2)
    count = sc.parallelize(list(enumerate(slices)), len(slices)).count()
    seconds = time.time() - t
    out = {"driver": which, "keys": n, "per_task": PER_TASK, "partitions": count, "plan_s": round(seconds, 2),
           "python_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "jvm_peak_mib": round(jvm_peak_mib(), 1)}
    spark.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
