"""emr/fruits_emr/bootstrap.sh run for real, on this machine, with the commands a node
has that this machine has not replaced by small stand-ins on PATH: `aws`
(copies from a local folder standing for the bucket, and notes each copy
with the region it was asked for),
`lspci` and `nvidia-smi` (a GPU node or not, with a given driver version),
and `ldconfig` (notes its calls); the CUDA wheels are small zips of fake
libraries, the binary a script whose `info` says what it was given."""

import hashlib
import json
import os
import shutil
import stat
import subprocess

import pytest
from conftest import EMR, FAKE_CUDA_MEMBERS, fake_cuda_wheels, fake_wheel

BOOTSTRAP = os.path.join(EMR, "fruits_emr", "bootstrap.sh")


def script(path, text):
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


T4 = {"version": "0.1.0", "cuda": {"driver_cuda_api": "12.2", "cublas_major": 12, "nvrtc": "12.6",
                                   "devices": [{"ordinal": 0, "name": "Tesla T4", "arch": "sm_75"}]}}


def fake_fruits(info=T4, kernels="ok"):
    """The binary: --version; `info --json` prints `info` (None: no such
    subcommand, as clap says it); `info --kernels ARCH` compiles (`ok`: says
    so, and what environment it was given) or fails with `kernels`."""
    info_case = (f"echo '{json.dumps(info)}'" if info is not None
                 else "echo \"error: unrecognized subcommand 'info'\" >&2; exit 2")
    compiled = ('echo "cuda:0 Tesla T4, 14.6 GiB, sm_75"; '
                'echo "kernels: compiled src/engine/cuda/kernels.cu for $3; LD_LIBRARY_PATH ${LD_LIBRARY_PATH-unset}"'
                if kernels == "ok" else f'echo "{kernels}" >&2; exit 1')
    return f'''case "${{1:-}} ${{2:-}}" in
  "info --json") {info_case};;
  "info --kernels") {compiled if info is not None else info_case};;
  *) echo "fruits 0.1.0";;
esac
'''


@pytest.fixture
def node(tmp_path):
    """A node: a bucket folder with the artifact, stand-in commands, and
    install folders; `run(env)` runs the bootstrap action."""
    bucket = tmp_path / "bucket" / "emr" / "art1"
    bucket.mkdir(parents=True)
    fruits = bucket / "fruits"
    script(fruits, fake_fruits())
    driver = bucket / "featurize_job.py"
    driver.write_text("print('driver')\n")
    # The CUDA wheels where fruits-emr puts them: emr/cuda/<sha256>/<name>.
    cuda_libs = []
    for w in fake_cuda_wheels(tmp_path / "wheels"):
        sha = hashlib.sha256(open(w, "rb").read()).hexdigest()
        (tmp_path / "bucket" / "emr" / "cuda" / sha).mkdir(parents=True)
        shutil.copy(w, tmp_path / "bucket" / "emr" / "cuda" / sha)
        cuda_libs.append({"name": os.path.basename(w), "sha256": sha})
    manifest = {"version": "fruits 0.1.0", "sha256": hashlib.sha256(fruits.read_bytes()).hexdigest(),
                "driver_sha256": hashlib.sha256(driver.read_bytes()).hexdigest(), "cuda_driver_min": "525.60.13",
                "cuda_libs": cuda_libs}
    (bucket / "fruits.json").write_text(json.dumps(manifest))
    bin_dir = tmp_path / "stand-ins"
    bin_dir.mkdir()
    copies = tmp_path / "aws-copies.log"
    script(bin_dir / "aws", f'''[ "$1 $2" = "s3 cp" ] || exit 2
shift 2; region=none
while [[ $1 == --* ]]; do
  case $1 in --region) region=$2; shift 2;; --only-show-errors) shift;; *) exit 2;; esac
done
src=${{1#s3://demo/}}; echo "$src $region" >> "{copies}"; cp "{tmp_path}/bucket/$src" "$2"
''')
    ldconfig_calls = tmp_path / "ldconfig.calls"
    script(bin_dir / "ldconfig", f'echo "ldconfig $*" >> "{ldconfig_calls}"\n')
    script(bin_dir / "lspci",
           '[ -n "${FAKE_GPU:-}" ] && echo "00:1e.0 3D controller: NVIDIA Corporation TU104GL [Tesla T4]"; true\n')
    script(bin_dir / "nvidia-smi", '''case "$*" in
  *driver_version*) echo "${FAKE_DRIVER:?}";;
  *name*) echo "Tesla T4";;
esac
''')
    install, lib, ldconf = tmp_path / "usr-local-bin", tmp_path / "usr-local-lib", tmp_path / "ld.so.conf.d"
    ldconf.mkdir()

    class Node:
        artifact = bucket
        installed = install / "fruits"
        driver_installed = lib / "featurize_job.py"
        lib_dir = lib
        ldconf_file = ldconf / "fruits-cuda.conf"
        wheels = cuda_libs

        @staticmethod
        def wheel_in_bucket(i):
            return tmp_path / "bucket" / "emr" / "cuda" / cuda_libs[i]["sha256"] / cuda_libs[i]["name"]

        log = tmp_path / "bootstrap.log"

        @staticmethod
        def copied():
            """The key of each copy."""
            return [key for key, _ in Node.copies()]

        @staticmethod
        def copies():
            """(key, region) of each copy."""
            return [line.split() for line in copies.read_text().splitlines()] if copies.exists() else []

        @staticmethod
        def ldconfig_calls():
            return ldconfig_calls.read_text().splitlines() if ldconfig_calls.exists() else []

        @staticmethod
        def manifest(**changes):
            m = json.loads((bucket / "fruits.json").read_text())
            m.update(changes)
            (bucket / "fruits.json").write_text(json.dumps(m))

        @staticmethod
        def set_fruits(text):
            script(fruits, text)
            Node.manifest(sha256=hashlib.sha256(fruits.read_bytes()).hexdigest())

        @staticmethod
        def run(**extra):
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SUDO": "",
                   "FRUITS_INSTALL_DIR": str(install), "FRUITS_LIB_DIR": str(lib),
                   "FRUITS_BOOTSTRAP_LOG": str(Node.log),
                   "FRUITS_LDCONF_DIR": str(ldconf), "FRUITS_LDCONFIG": str(bin_dir / "ldconfig")}
            env.update(extra)
            if extra.get("NO_NVIDIA_SMI"):
                (bin_dir / "nvidia-smi").unlink()
            install.mkdir(exist_ok=True)
            return subprocess.run(["bash", BOOTSTRAP, "s3://demo/emr/art1/", "eu-central-1"], capture_output=True,
                                  text=True, env=env)

    return Node


def test_a_cpu_node_installs_and_a_second_run_keeps_it(node):
    out = node.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.access(node.installed, os.X_OK) and node.driver_installed.read_text() == "print('driver')\n"
    assert "no NVIDIA GPU on this node" in out.stdout and "fruits 0.1.0" in out.stdout
    again = node.run()
    assert again.returncode == 0 and "is already installed" in again.stdout, again.stdout


def test_every_copy_names_the_buckets_region_and_the_log_is_not_writable_by_all(node):
    node.log.write_text("an earlier bootstrap's lines\n")
    node.log.chmod(0o666)  # as bootstrap.sh left it before
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 0, out.stdout + out.stderr
    copies = node.copies()
    assert len(copies) == 5 and all(region == "eu-central-1" for _, region in copies), copies
    assert stat.S_IMODE(node.log.stat().st_mode) == 0o644
    log = node.log.read_text()
    assert log.startswith("an earlier bootstrap's lines\n") and "installing fruits from s3://demo/emr/art1 " \
        "(eu-central-1)" in log and "fruits-bootstrap: done" in log, log
    # Without the region, the action refuses to start.
    bare = subprocess.run(["bash", BOOTSTRAP, "s3://demo/emr/art1/"], capture_output=True, text=True)
    assert bare.returncode != 0 and "usage: bootstrap.sh s3://BUCKET/emr/ARTIFACT/ REGION" in bare.stderr


def test_a_tampered_binary_is_refused(node):
    with open(node.artifact / "fruits", "a") as f:
        f.write("# tampered\n")
    out = node.run()
    assert out.returncode == 1
    assert "its manifest says" in out.stderr + out.stdout
    assert not node.installed.exists()


def test_a_gpu_node_checks_its_driver(node):
    ok = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "GPU Tesla T4, NVIDIA driver 535.104.05, fruits needs >= 525.60.13" in ok.stdout
    for older in ("470.82.01", "525.60.11"):  # the whole version counts, not only its first number
        old = node.run(FAKE_GPU="1", FAKE_DRIVER=older)
        assert old.returncode == 1
        assert f"NVIDIA driver {older} is older than 525.60.13" in old.stdout + old.stderr
    assert node.run(FAKE_GPU="1", FAKE_DRIVER="525.60.13").returncode == 0


def test_a_gpu_node_installs_the_cuda_libraries_from_the_bucket(node):
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 0, out.stdout + out.stderr
    cuda = node.lib_dir / "cuda"
    for members in FAKE_CUDA_MEMBERS.values():
        for m in members:
            assert (cuda / m).read_text() == f"fake {m}\n", m
    # The folders holding the libraries, for the loader's cache; ldconfig ran.
    assert node.ldconf_file.read_text().splitlines() == [str(cuda / "nvidia" / "cublas" / "lib"),
                                                         str(cuda / "nvidia" / "cuda_nvrtc" / "lib")]
    assert node.ldconfig_calls() == ["ldconfig "]
    # The wheels came from the bucket, next to the artifact, and were not left behind in a temporary folder.
    assert [c for c in node.copied() if "/cuda/" in c] == [f"emr/cuda/{w['sha256']}/{w['name']}" for w in node.wheels]
    # `fruits info` found the T4 and compiled the kernels for it, run as Spark runs the binary: no
    # LD_LIBRARY_PATH, the loader's cache only.
    assert "fruits info: cuda:0 Tesla T4, 14.6 GiB, sm_75" in out.stdout
    assert "fruits info: kernels: compiled src/engine/cuda/kernels.cu for sm_75; LD_LIBRARY_PATH unset" in out.stdout
    # Again: the installed wheels are kept, the cache is rebuilt.
    again = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(f"{w['name']} is already installed" in again.stdout for w in node.wheels), again.stdout
    assert len([c for c in node.copied() if "/cuda/" in c]) == 2 and len(node.ldconfig_calls()) == 2


def test_a_cuda_wheel_with_a_wrong_sha256_fails_the_gpu_node_naming_it(node):
    with open(node.wheel_in_bucket(1), "ab") as f:
        f.write(b"tampered")
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 1
    name = node.wheels[1]["name"]
    assert f"FAILED: sha256 of the CUDA wheel {name} is" in out.stdout + out.stderr
    assert "its manifest says" in out.stdout + out.stderr
    assert not (node.lib_dir / "cuda" / "nvidia" / "cuda_nvrtc").exists()
    assert not node.ldconf_file.exists() and node.ldconfig_calls() == []


def test_a_missing_cuda_wheel_or_library_fails_the_gpu_node(node):
    node.wheel_in_bucket(0).unlink()
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 1
    assert f"cannot copy the CUDA wheel s3://demo/emr/cuda/{node.wheels[0]['sha256']}/{node.wheels[0]['name']}" \
        in out.stdout + out.stderr
    # A wheel without the library the binary loads.
    fake_wheel(node.wheel_in_bucket(0), ["nvidia/cublas/lib/libcublas.so.12"])
    cuda_libs = [dict(node.wheels[0], sha256=hashlib.sha256(node.wheel_in_bucket(0).read_bytes()).hexdigest()),
                 node.wheels[1]]
    new_home = node.wheel_in_bucket(0).parent.parent / cuda_libs[0]["sha256"]
    new_home.mkdir()
    shutil.copy(node.wheel_in_bucket(0), new_home)
    node.manifest(cuda_libs=cuda_libs)
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 1 and "hold no libcublasLt.so.12" in out.stdout + out.stderr, out.stdout + out.stderr
    # A manifest without CUDA libraries (a CPU cluster's) on a GPU node.
    node.manifest(cuda_libs=[])
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 1 and "lists no CUDA libraries" in out.stdout + out.stderr


def test_a_cpu_node_skips_the_cuda_libraries(node):
    out = node.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (node.lib_dir / "cuda").exists() and not node.ldconf_file.exists()
    assert node.ldconfig_calls() == [] and not any("/cuda/" in c for c in node.copied())
    assert "fruits info" not in out.stdout


def test_fruits_info_fails_a_gpu_node_where_cuda_is_unusable_unless_the_binary_predates_it(node):
    # A binary without the subcommand (clap's words): logged, the node is kept.
    node.set_fruits(fake_fruits(info=None))
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "this fruits has no `info` subcommand" in out.stdout
    # A binary with it that finds no usable device (it exits 0 then: its JSON says so).
    node.set_fruits(fake_fruits(info={"version": "0.1.0", "cuda": {"unavailable": "no libcublas.so.12 found"}}))
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 1
    assert "fruits finds no usable CUDA device on this GPU node: no libcublas.so.12 found" in out.stdout + out.stderr
    # One whose kernels do not compile for the device.
    node.set_fruits(fake_fruits(kernels="NVRTC could not compile src/engine/cuda/kernels.cu for sm_75"))
    out = node.run(FAKE_GPU="1", FAKE_DRIVER="535.104.05")
    assert out.returncode == 1
    assert "fruits cannot compile its CUDA kernels for sm_75 on this node: NVRTC could not compile" \
        in out.stdout + out.stderr


def test_a_gpu_node_without_a_driver_fails_loudly(node):
    out = node.run(FAKE_GPU="1", NO_NVIDIA_SMI="1")
    assert out.returncode == 1
    assert "nvidia-smi is not: no driver installed" in out.stdout + out.stderr


def test_a_binary_that_does_not_start_fails_the_node(node):
    broken = node.artifact / "fruits"
    script(broken, 'echo "version GLIBC_2.36 not found" >&2; exit 1\n')
    manifest = json.loads((node.artifact / "fruits.json").read_text())
    manifest["sha256"] = hashlib.sha256(broken.read_bytes()).hexdigest()
    (node.artifact / "fruits.json").write_text(json.dumps(manifest))
    out = node.run()
    assert out.returncode == 1
    assert "does not start on this node" in out.stdout + out.stderr and "GLIBC_2.36" in out.stdout + out.stderr
