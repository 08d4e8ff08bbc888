"""Fixtures for the cluster side, all real and all on 127.0.0.1: the
`fruits` binary cargo built, an S3-compatible server (moto, which also
speaks EMR, CloudFormation and IAM), a recording proxy in front of it, and
a Spark standalone cluster (a master and two workers, separate JVMs) from
the pyspark wheel. No test reaches the network."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile

import pytest

EMR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(EMR)
sys.path.insert(0, EMR)

HELPER = os.path.join(REPO, "tests", "s3_helper.py")
CREDS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-key"}


# What each pinned CUDA wheel (emr/fruits_emr/cuda_libs.txt) holds, in small: the
# libraries the binary loads, and a header that is not a library.
FAKE_CUDA_MEMBERS = {
    "nvidia-cublas-cu12": ["nvidia/cublas/lib/libcublas.so.12", "nvidia/cublas/lib/libcublasLt.so.12",
                           "nvidia/cublas/include/cublas.h"],
    "nvidia-cuda-nvrtc-cu12": ["nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
                               "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.6",
                               "nvidia/cuda_nvrtc/include/nvrtc.h"],
}


def fake_wheel(path, members):
    """A zip named like a wheel holding `members` (a few bytes each)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("nvidia/__init__.py", "")
        for m in members:
            z.writestr(m, f"fake {m}\n")
    return str(path)


def fake_cuda_wheels(folder):
    """A wheels folder as emr/fetch_cuda_wheels.sh leaves it: one wheel of
    each pinned package and version, with small fake libraries."""
    from fruits_emr import artifacts

    os.makedirs(folder, exist_ok=True)
    out = []
    for package, version in artifacts.cuda_pins().wheels:
        name = f"{package.replace('-', '_')}-{version}-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
        out.append(fake_wheel(os.path.join(folder, name), FAKE_CUDA_MEMBERS[package]))
    return out


@pytest.fixture(scope="session")
def fruits_bin():
    path = os.environ.get("FRUITS_BIN") or os.path.join(REPO, "target", "debug", "fruits")
    if not os.path.isfile(path):
        pytest.fail(f"no fruits binary at {path}: run .ci/run (it builds it with cargo test) or set FRUITS_BIN")
    return path


def spawn_ready(args, env=None):
    """Starts a helper that prints `ready PORT`; returns (process, port)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        pytest.fail(f"{args} did not start: {line!r}")
    return proc, int(line.split()[1])


@pytest.fixture(scope="session")
def moto():
    """moto in server mode: S3, EMR, CloudFormation, IAM on one port."""
    proc, port = spawn_ready([sys.executable, HELPER, "serve"])
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture
def recorder(moto, tmp_path):
    """A proxy in front of moto that records every request it forwards."""
    record = tmp_path / "requests.jsonl"
    record.touch()
    proc, port = spawn_ready([sys.executable, HELPER, "proxy", moto.rsplit(":", 1)[1], "--record", str(record)])

    class Recorder:
        endpoint = f"http://127.0.0.1:{port}"

        @staticmethod
        def requests():
            with open(record) as f:
                return [json.loads(line) for line in f if line.strip()]

    yield Recorder
    proc.kill()
    proc.wait()


def aws_env(endpoint, **extra):
    env = dict(os.environ)
    env.update(CREDS)
    env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_REGION", None)
    env.update(extra)
    return env


def helper(endpoint, *args):
    out = subprocess.run([sys.executable, HELPER] + list(args[:1]) + [endpoint] + list(args[1:]),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home():
    import pyspark

    return os.path.dirname(pyspark.__file__)


def spark_env():
    env = dict(os.environ)
    env.update({"SPARK_HOME": spark_home(), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1"})
    return env


def wait_for(check, what, timeout=90):
    start = time.time()
    while not check():
        if time.time() - start > timeout:
            pytest.fail(f"{what} did not happen in {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def spark_cluster():
    """A standalone master and two workers of one core each on 127.0.0.1:
    executors are separate JVMs with their own work directories, so
    `addFile` really ships files, as on a cluster."""
    work = tempfile.mkdtemp(prefix="fruits-spark-")
    env = spark_env()
    cls = os.path.join(spark_home(), "bin", "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    logs = []
    procs = []

    def start(name, args):
        log = open(os.path.join(work, f"{name}.log"), "w")
        logs.append(log)
        procs.append(subprocess.Popen([cls] + args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))

    start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                     "--webui-port", str(free_port())])
    wait_for(lambda: "ALIVE" in open(os.path.join(work, "master.log")).read(), "the Spark master starting")
    workers = []
    for i in (1, 2):
        wdir = os.path.join(work, f"worker{i}")
        workers.append(wdir)
        start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--cores", "1", "--memory", "2g",
                             "--work-dir", wdir, "--webui-port", str(free_port()), url])
    wait_for(lambda: open(os.path.join(work, "master.log")).read().count("Registering worker") >= 2,
             "two Spark workers registering")

    class Cluster:
        master = url
        worker_dirs = workers
        directory = work

    yield Cluster
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(timeout=30)
    for log in logs:
        log.close()
    shutil.rmtree(work, ignore_errors=True)
