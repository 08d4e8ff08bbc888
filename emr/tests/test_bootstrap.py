"""emr/bootstrap.sh run for real, on this machine, with the commands a node
has that this machine has not replaced by small stand-ins on PATH: `aws`
(copies from a local folder standing for the bucket), `lspci` and
`nvidia-smi` (a GPU node or not, with a given driver version)."""

import hashlib
import json
import os
import stat
import subprocess

import pytest

from conftest import EMR

BOOTSTRAP = os.path.join(EMR, "bootstrap.sh")


def script(path, text):
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def node(tmp_path):
    """A node: a bucket folder with the artifact, stand-in commands, and
    install folders; `run(env)` runs the bootstrap action."""
    bucket = tmp_path / "bucket" / "emr" / "art1"
    bucket.mkdir(parents=True)
    fruits = bucket / "fruits"
    script(fruits, 'echo "fruits 0.1.0"\n')
    driver = bucket / "featurize_job.py"
    driver.write_text("print('driver')\n")
    manifest = {"version": "fruits 0.1.0", "sha256": hashlib.sha256(fruits.read_bytes()).hexdigest(),
                "driver_sha256": hashlib.sha256(driver.read_bytes()).hexdigest(), "cuda_driver_min": "525"}
    (bucket / "fruits.json").write_text(json.dumps(manifest))
    bin_dir = tmp_path / "stand-ins"
    bin_dir.mkdir()
    script(bin_dir / "aws", f'''[ "$1 $2" = "s3 cp" ] || exit 2
shift 2; [ "$1" = --only-show-errors ] && shift
src=${{1#s3://demo/}}; cp "{tmp_path}/bucket/$src" "$2"
''')
    script(bin_dir / "lspci", '[ -n "${FAKE_GPU:-}" ] && echo "00:1e.0 3D controller: NVIDIA Corporation TU104GL [Tesla T4]"; true\n')
    script(bin_dir / "nvidia-smi", '''case "$*" in
  *driver_version*) echo "${FAKE_DRIVER:?}";;
  *name*) echo "Tesla T4";;
esac
''')
    install, lib = tmp_path / "usr-local-bin", tmp_path / "usr-local-lib"

    class Node:
        artifact = bucket
        installed = install / "fruits"
        driver_installed = lib / "featurize_job.py"

        @staticmethod
        def run(**extra):
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SUDO": "",
                   "FRUITS_INSTALL_DIR": str(install), "FRUITS_LIB_DIR": str(lib),
                   "FRUITS_BOOTSTRAP_LOG": str(tmp_path / "bootstrap.log")}
            env.update(extra)
            if extra.get("NO_NVIDIA_SMI"):
                (bin_dir / "nvidia-smi").unlink()
            install.mkdir(exist_ok=True)
            return subprocess.run(["bash", BOOTSTRAP, "s3://demo/emr/art1/"], capture_output=True, text=True,
                                  env=env)

    return Node


def test_a_cpu_node_installs_and_a_second_run_keeps_it(node):
    out = node.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.access(node.installed, os.X_OK) and node.driver_installed.read_text() == "print('driver')\n"
    assert "no NVIDIA GPU on this node" in out.stdout and "fruits 0.1.0" in out.stdout
    again = node.run()
    assert again.returncode == 0 and "is already installed" in again.stdout, again.stdout


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
    assert "GPU Tesla T4, NVIDIA driver 535.104.05, fruits needs >= 525" in ok.stdout
    old = node.run(FAKE_GPU="1", FAKE_DRIVER="470.82.01")
    assert old.returncode == 1
    assert "NVIDIA driver 470.82.01 is older than 525" in old.stdout + old.stderr


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
