"""The CUDA libraries GPU nodes get, without AWS or the network: the pins
(emr/fruits_emr/cuda_libs.txt), finding the pinned wheels in a folder and
checking each against its pin, which clusters need them, and
emr/fetch_cuda_wheels.sh's pip command (a stand-in pip)."""

import os
import stat
import subprocess
import sys

import pytest
from conftest import EMR, fake_cuda_pins, fake_cuda_wheels, fake_wheel
from fruits_emr import artifacts, cluster, commands, files, prices

FETCH = os.path.join(EMR, "fetch_cuda_wheels.sh")


def test_the_pins_are_exact_hashed_12x_wheels_of_cublas_and_nvrtc():
    pins = artifacts.cuda_pins()
    assert [p.package for p in pins.wheels] == ["nvidia-cublas-cu12", "nvidia-cuda-nvrtc-cu12"]
    assert all(p.version.startswith("12.") for p in pins.wheels)
    assert pins.driver_min == "525.60.13"  # CUDA 12 minor-version compatibility
    lines = [line for line in open(files.data("cuda_libs.txt")) if line.strip() and not line.startswith("#")]
    # The hashes are kept, each the one on its line.
    assert [f"{p.package}=={p.version} --hash=sha256:{p.sha256}" for p in pins.wheels] == [x.strip() for x in lines]


def test_a_bad_pins_file_is_refused(tmp_path):
    bad = tmp_path / "pins.txt"
    bad.write_text("nvidia-cublas-cu12>=12\n# cuda_driver_min: 525\n")
    with pytest.raises(ValueError, match="is not `package==version"):
        artifacts.cuda_pins(str(bad))
    bad.write_text("nvidia-cublas-cu12==12.6.4.1\n# cuda_driver_min: 525\n")
    with pytest.raises(ValueError, match="is not `package==version --hash=sha256:<64 hex>`"):
        artifacts.cuda_pins(str(bad))  # a pin without its hash
    bad.write_text(f"nvidia-cublas-cu12==12.6.4.1 --hash=sha256:{'0' * 64}\n")
    with pytest.raises(ValueError, match="cuda_driver_min"):
        artifacts.cuda_pins(str(bad))


def test_the_pinned_wheels_are_found_and_the_others_ignored(tmp_path):
    wheels = fake_cuda_wheels(tmp_path)
    pins = artifacts.cuda_pins(fake_cuda_pins(wheels, tmp_path / "pins.txt"))
    # Another platform's wheel and another version of the same package are not picked.
    fake_wheel(tmp_path / "nvidia_cublas_cu12-12.6.4.1-py3-none-manylinux2014_aarch64.whl", [])
    fake_wheel(tmp_path / "nvidia_cublas_cu12-12.9.1.4-py3-none-manylinux2014_x86_64.whl", [])
    found = artifacts.find_cuda_wheels(str(tmp_path), "g4dn", pins)
    assert [(w.path, w.sha256) for w in found] == [(w, p.sha256) for w, p in zip(wheels, pins.wheels, strict=True)]
    os.unlink(wheels[0])
    with pytest.raises(FileNotFoundError, match=r"no nvidia_cublas_cu12-12\.6\.4\.1-\*x86_64\.whl in .*"
                                                r"fetch_cuda_wheels\.sh"):
        artifacts.find_cuda_wheels(str(tmp_path), "g4dn", pins)
    with pytest.raises(FileNotFoundError, match="no CUDA wheels folder"):
        artifacts.find_cuda_wheels(str(tmp_path / "nowhere"), "g4dn", pins)


def test_a_wheel_is_refused_unless_its_sha256_is_the_pinned_one(tmp_path):
    wheels = fake_cuda_wheels(tmp_path / "w")
    pins_file = fake_cuda_pins(wheels, tmp_path / "pins.txt")
    pins = artifacts.cuda_pins(pins_file)
    # One byte changed after the pins were written: refused, naming the file, the pin and both hashes.
    with open(wheels[1], "ab") as f:
        f.write(b"\0")
    actual = artifacts.sha256_of(wheels[1])
    with pytest.raises(artifacts.WheelRefused) as refused:
        artifacts.find_cuda_wheels(str(tmp_path / "w"), "g4dn", pins)
    assert str(refused.value).startswith(
        f"{wheels[1]} is not the pinned nvidia-cuda-nvrtc-cu12==12.6.85: its sha256 is {actual}, "
        f"{pins_file} pins {pins.wheels[1].sha256}; refused")
    # The real pins (the default) refuse the fakes: only the files PyPI serves pass.
    with pytest.raises(artifacts.WheelRefused, match=f"its sha256 is {artifacts.sha256_of(wheels[0])}, "
                       f".*cuda_libs.txt pins {artifacts.cuda_pins().wheels[0].sha256}"):
        artifacts.find_cuda_wheels(str(tmp_path / "w"), "g4dn")


def test_only_clusters_with_gpu_instances_need_the_wheels(tmp_path):
    t = prices.table()
    assert commands.gpu_types(t, cluster.Shape()) == ["g4dn.xlarge"]  # the default core nodes
    assert commands.gpu_types(t, cluster.Shape(master_type="g4dn.xlarge", core_type="g4dn.xlarge")) == ["g4dn.xlarge"]
    cpu = cluster.Shape(core_type="m5.2xlarge")
    assert commands.gpu_types(t, cpu) == []
    assert commands.cuda_wheels_for(t, cpu, str(tmp_path / "nowhere")) == []
    with pytest.raises(FileNotFoundError, match="a cluster of g4dn.xlarge"):
        commands.cuda_wheels_for(t, cluster.Shape(), str(tmp_path / "nowhere"))


def test_the_manifest_lists_the_wheels_and_the_id_changes_with_them(tmp_path):
    binary = tmp_path / "fruits"
    binary.write_text("#!/bin/sh\necho 'fruits 0.1.0'\n")
    binary.chmod(0o755)
    plain = artifacts.build(str(binary))
    assert plain.manifest["cuda_libs"] == [] and plain.manifest["cuda_driver_min"] is None and plain.cuda == ()
    paths = fake_cuda_wheels(tmp_path / "w")
    pins = artifacts.cuda_pins(fake_cuda_pins(paths, tmp_path / "pins.txt"))
    wheels = artifacts.find_cuda_wheels(str(tmp_path / "w"), "g4dn", pins)
    gpu = artifacts.build(str(binary), cuda_wheels=wheels)
    assert gpu.id != plain.id
    assert gpu.manifest["cuda_driver_min"] == artifacts.cuda_pins().driver_min
    for entry, path, (key, local) in zip(gpu.manifest["cuda_libs"], paths, gpu.cuda, strict=True):
        assert entry == {"name": os.path.basename(path), "sha256": artifacts.sha256_of(path)}
        assert key == f"emr/cuda/{entry['sha256']}/{entry['name']}" and local == path


def test_the_fetch_script_runs_the_pinned_pip_download(tmp_path):
    # A stand-in python: notes its arguments, makes a wheel where pip would.
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\necho "$@" > "$FAKE_LOG"\n'
                    'while [ $# -gt 0 ]; do\n'
                    '  [ "$1" = -d ] && touch "$2/x-py3-none-manylinux2014_x86_64.whl"; shift\n'
                    'done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "args"
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "FRUITS_EMR_PYTHON": str(fake), "FAKE_LOG": str(log)}
    out = subprocess.run(["bash", FETCH], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    default = home / ".cache" / "fruits" / "cuda-wheels"
    args = log.read_text().split()
    assert args[:3] == ["-m", "pip", "download"]
    for flag in ("--no-deps", "--only-binary=:all:", "--require-hashes"):
        assert flag in args
    assert args[args.index("--platform") + 1] == "manylinux2014_x86_64"
    assert args[args.index("-r") + 1] == files.data("cuda_libs.txt")
    assert args[args.index("-d") + 1] == str(default)
    # Where fruits-emr looks by default.
    code = "from fruits_emr import files; print(files.default_cuda_wheels())"
    looked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=EMR,
                            env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert looked == str(default)
    # A folder given, or $FRUITS_CUDA_WHEELS.
    assert subprocess.run(["bash", FETCH, str(tmp_path / "d")], env=env).returncode == 0
    assert log.read_text().split()[-1] == str(tmp_path / "d")
    assert subprocess.run(["bash", FETCH], env=dict(env, FRUITS_CUDA_WHEELS=str(tmp_path / "e"))).returncode == 0
    assert log.read_text().split()[-1] == str(tmp_path / "e")
