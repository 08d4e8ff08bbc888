"""Fixtures for the cluster side, all real and all on 127.0.0.1: the
`fruits` binary cargo built, an S3-compatible server (moto, which also
speaks EMR, CloudFormation and IAM), a recording proxy in front of it (and
one that can refuse an EMR call), and a Spark standalone cluster (a master
and two workers, separate JVMs) from the pyspark wheel. No test reaches the
network."""

import hashlib
import http.client
import http.server
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
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
    each pinned package and version, with small fake libraries (whose
    sha256 is not the pinned one: fake_cuda_pins pins them)."""
    from fruits_emr import artifacts

    os.makedirs(folder, exist_ok=True)
    out = []
    for pin in artifacts.cuda_pins().wheels:
        name = f"{pin.package.replace('-', '_')}-{pin.version}-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
        out.append(fake_wheel(os.path.join(folder, name), FAKE_CUDA_MEMBERS[pin.package]))
    return out


def fake_cuda_pins(wheels, path):
    """A pins file in cuda_libs.txt's format pinning the fake `wheels` (from
    fake_cuda_wheels, in the real pins' order) to their own sha256."""
    from fruits_emr import artifacts

    real = artifacts.cuda_pins()
    lines = [f"# cuda_driver_min: {real.driver_min}"]
    for pin, wheel in zip(real.wheels, wheels, strict=True):
        digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
        lines.append(f"{pin.package}=={pin.version} --hash=sha256:{digest}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def pinned_fruits_emr(root):
    """fruits-emr as a user who pinned the fake wheels has it: a copy of
    emr/ (without its tests) whose cuda_libs.txt pins the fake wheels of
    root/cuda-wheels, and that folder. Its code is this checkout's and
    checks the wheels as ever, against these pins; the real pins refuse the
    fakes (test_cuda_unit), so tests that send wheels run this copy."""
    root = str(root)
    shutil.copytree(EMR, os.path.join(root, "emr"),
                    ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
    wheels = fake_cuda_wheels(os.path.join(root, "cuda-wheels"))
    fake_cuda_pins(wheels, os.path.join(root, "emr", "fruits_emr", "cuda_libs.txt"))
    return types.SimpleNamespace(root=root, tool=os.path.join(root, "emr", "fruits-emr"),
                                 wheels=os.path.join(root, "cuda-wheels"))


@pytest.fixture(scope="session")
def pinned(tmp_path_factory):
    return pinned_fruits_emr(tmp_path_factory.mktemp("pinned"))


@pytest.fixture(scope="session")
def fruits_bin():
    path = os.environ.get("FRUITS_BIN") or os.path.join(REPO, "target", "debug", "fruits")
    if not os.path.isfile(path):
        pytest.fail(f"no fruits binary at {path}: run .ci/run (it builds it with cargo test) or set FRUITS_BIN")
    return path


RECORDING_FRUITS = """#!/bin/bash
# Notes this call (its arguments; a featurize's stdin too), then becomes the
# real binary: exec, the same process, so it dies with its parent as the
# binary would, and a test that kills the binary kills this.
log={folder}/$(date +%s%N)-$$
printf '%s\\0' "$@" > "$log.args"
for a in "$@"; do
    if [ "$a" = featurize ]; then
        cat > "$log.stdin"
        exec {real} "$@" < "$log.stdin"
    fi
done
exec {real} "$@"
"""


def recording_fruits(real, folder):
    """A `fruits` that notes every call in `folder` and runs `real`. Returns
    its path and a function giving the calls so far, in the order they
    started: {"args": [...], "stdin": the lines of a featurize's stdin, else
    None}."""
    folder = os.path.abspath(str(folder))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "fruits")
    with open(path, "w") as f:
        f.write(RECORDING_FRUITS.format(folder=shlex.quote(folder), real=shlex.quote(os.path.abspath(real))))
    os.chmod(path, 0o755)

    def calls():
        out = []
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".args")):
            base = os.path.join(folder, name[:-len(".args")])
            with open(base + ".args", encoding="utf-8", errors="surrogateescape") as f:
                args = f.read().split("\0")[:-1]
            stdin = None
            if os.path.exists(base + ".stdin"):
                with open(base + ".stdin", encoding="utf-8", errors="surrogateescape", newline="") as f:
                    stdin = [line for line in f.read().split("\n") if line]
            out.append({"args": args, "stdin": stdin})
        return out

    return path, calls


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


class EmrProxy:
    """A proxy in front of moto, in this process: notes each request (the
    operation of JSON-protocol ones, EMR's, and the body), and answers an
    operation's first calls with 503, after holding them a while, as a
    network or AWS having a bad moment would (`refuse`)."""

    def __init__(self, upstream_port: int):
        self.calls, self.rules, self.lock = [], {}, threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                op = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                status, headers, data = proxy.answer(op, self.command, self.path, dict(self.headers), body,
                                                     upstream_port)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_HEAD = do_POST

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def refuse(self, op: str, times: int, hold_s: float = 0.0):
        with self.lock:
            self.rules[op] = {"times": times, "hold_s": hold_s}

    def ops(self):
        with self.lock:
            return [op for op, _ in self.calls]

    def bodies(self, op):
        with self.lock:
            return [json.loads(body or b"{}") for o, body in self.calls if o == op]

    def answer(self, op, method, path, headers, body, upstream_port):
        with self.lock:
            self.calls.append((op, body))
            rule = self.rules.get(op)
            refused = bool(rule and rule["times"] > 0)
            if refused:
                rule["times"] -= 1
        if rule:
            time.sleep(rule["hold_s"])
        if refused:
            msg = json.dumps({"__type": "ServiceUnavailableException", "message": "refused by the test's proxy"})
            return 503, [("Content-Type", "application/x-amz-json-1.1")], msg.encode()
        conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
        conn.request(method, path, body=body or None,
                     headers={k: v for k, v in headers.items() if k.lower() != "connection"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data


@pytest.fixture
def emr_proxy(moto):
    proxy = EmrProxy(int(moto.rsplit(":", 1)[1]))
    yield proxy
    proxy.server.shutdown()
    proxy.server.server_close()


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
