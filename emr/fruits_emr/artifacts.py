"""What every node installs: the `fruits` binary, the PySpark driver, the
bootstrap action, and `fruits.json`, their manifest (sha256 of each). They
go to s3://BUCKET/emr/<artifact id>/, the id a hash of their hashes, so a
changed binary never overwrites the one a running cluster uses."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

EMR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, EMR)
from featurize_job import sha256_of  # noqa: E402  (the driver's, so one hash function)


@dataclasses.dataclass(frozen=True)
class Artifact:
    id: str
    files: dict  # name in S3 -> local path
    manifest: dict

    def prefix(self, bucket: str) -> str:
        return f"s3://{bucket}/emr/{self.id}/"


def build(binary: str, cuda_driver_min=None) -> Artifact:
    """The artifact of `binary` and this checkout's driver and bootstrap."""
    if not os.path.isfile(binary):
        raise FileNotFoundError(f"no fruits binary at {binary}: build it first (cargo build --release)")
    files = {
        "fruits": binary,
        "featurize_job.py": os.path.join(EMR, "featurize_job.py"),
        "bootstrap.sh": os.path.join(EMR, "bootstrap.sh"),
    }
    shas = {name: sha256_of(path) for name, path in files.items()}
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    manifest = {
        "version": version,
        "sha256": shas["fruits"],
        "driver_sha256": shas["featurize_job.py"],
        "bootstrap_sha256": shas["bootstrap.sh"],
        "cuda_driver_min": cuda_driver_min,
    }
    ident = hashlib.sha256("".join(shas[n] for n in sorted(shas)).encode()).hexdigest()[:16]
    return Artifact(id=ident, files=files, manifest=manifest)


def upload(aws, bucket: str, art: Artifact) -> None:
    """Puts the files, then the manifest (the bootstrap reads it first)."""
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
