"""The RunJobFlow request, from emr/fruits_emr/cluster.json (the cluster in one file)
and the command's choices; and the spark-submit step that runs the driver."""

import dataclasses
import json
import re
import time

from . import files, prices

DRIVER_ON_NODES = "/usr/local/lib/fruits/featurize_job.py"  # where bootstrap.sh installs it
FRUITS_ON_NODES = "/usr/local/bin/fruits"
DEFAULT_IDLE_TIMEOUT_S = 30 * 60


@dataclasses.dataclass(frozen=True)
class Shape:
    master_type: str = "m5.xlarge"
    core_type: str = "g4dn.xlarge"
    core_count: int = 2
    spot: bool = False

    def describe(self) -> str:
        market = " (Spot)" if self.spot else ""
        return f"1 x {self.master_type} + {self.core_count} x {self.core_type}{market}"


def fill(node, values: dict):
    """`${name}` alone in a string becomes values[name] with its type (a
    number stays a number); inside a longer string, its text."""
    if isinstance(node, dict):
        return {k: fill(v, values) for k, v in node.items() if not k.startswith("_")}
    if isinstance(node, list):
        return [fill(v, values) for v in node]
    if isinstance(node, str):
        whole = re.fullmatch(r"\$\{(\w+)\}", node)
        if whole:
            return values[whole.group(1)]
        return re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]), node)
    return node


def placement(core_type: str) -> dict:
    """One executor per core node owning the node: its vCPUs as the task's
    CPUs (one binary at a time, using every core and the GPU); half the
    node's memory split between the JVM (small: it only passes keys) and the
    overhead the binary and its images live in (YARN counts the child)."""
    inst = prices.instance(prices.table(), core_type)
    quarter = max(2, inst["memory_gib"] // 4)
    return {"core_vcpu": str(inst["vcpu"]), "executor_memory": f"{quarter}g", "executor_overhead": f"{quarter}g"}


def template(path: str = None) -> dict:
    with open(path or files.data("cluster.json"), encoding="utf-8") as f:
        return json.load(f)


def project_tag() -> dict:
    """The tag every fruits cluster carries (cluster.json's `project`): the
    only sign `status` and `down` trust that a cluster is the project's."""
    return next(t for t in template()["Tags"] if t["Key"] == "project")


def run_job_flow(*, bucket: str, region: str, roles: dict, artifact: str, purpose: str, shape: Shape,
                 keep_alive: bool, idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S, steps=(), path: str = None) -> dict:
    """`roles`: the stack's outputs (stack_outputs in commands)."""
    values = {
        "purpose": purpose,
        "stamp": time.strftime("%Y%m%d-%H%M%S", time.gmtime()),
        "bucket": bucket,
        "region": region,
        "service_role": roles["ServiceRole"],
        "instance_profile": roles["InstanceProfile"],
        "security_configuration": roles["SecurityConfiguration"],
        "subnet": roles["SubnetId"],
        "artifact": artifact,
        "idle_timeout_s": idle_timeout_s,
        "keep_alive": keep_alive,
        "master_type": shape.master_type,
        "core_type": shape.core_type,
        "core_count": shape.core_count,
        "core_market": "SPOT" if shape.spot else "ON_DEMAND",
        **placement(shape.core_type),
    }
    request = fill(template(path), values)
    # Spark's configuration values are strings.
    for conf in request["Configurations"]:
        conf["Properties"] = {k: str(v) for k, v in conf["Properties"].items()}
    if steps:
        request["Steps"] = list(steps)
    return request


def featurize_step(*, name: str, driver_args: list, on_failure: str) -> dict:
    """spark-submit of the driver the bootstrap installed, in client mode on
    the master (its report goes to the step's stdout log)."""
    return {
        "Name": name,
        "ActionOnFailure": on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["spark-submit", "--deploy-mode", "client", DRIVER_ON_NODES, "--fruits", FRUITS_ON_NODES]
            + list(driver_args),
        },
    }
