"""The TLS certificate of EMR's in-transit encryption (infra.yaml's security
configuration, PEM provider): a zip at s3://BUCKET/emr/tls/in-transit.zip
holding the three files EMR's documentation names, privateKey.pem,
certificateChain.pem and trustedCertificates.pem. EMR copies it to every
node when the cluster starts.

The certificate is the one EMR documents for a self-signed setup: a
wildcard for the region's internal domain (CN and subjectAltName
*.eu-west-1.compute.internal: every node's private DNS name in the VPC,
ip-10-80-x-y.eu-west-1.compute.internal, and no other name), self-signed,
so trustedCertificates.pem is the certificate itself. It is a TLS leaf,
not a CA (CA:FALSE; digital signature and key encipherment; server and
client authentication), RSA 2048 with SHA-256, valid VALID_DAYS days;
`deploy` makes a new one RENEW_DAYS days before it expires.

The private key is made by `openssl` on the operator's machine and goes
nowhere but into the zip, in memory, and the zip nowhere but into the
bucket (SSE-KMS with the project's key; the nodes' role reads emr/): no
file holds it (the one temporary file is openssl's configuration, in a
directory removed after), nothing prints it, and a dry run makes no key at
all. The certificate's sha256, names and expiry go along as the object's
metadata, so that a later `deploy` or a cluster start reads them with a
HeadObject, never the key."""

import dataclasses
import datetime
import io
import os
import subprocess
import tempfile
import zipfile
from typing import Optional

KEY = "emr/tls/in-transit.zip"  # infra.yaml's SecurityConfiguration names this object
MEMBERS = ("privateKey.pem", "certificateChain.pem", "trustedCertificates.pem")  # EMR's names, exactly
VALID_DAYS = 365
RENEW_DAYS = 30
RSA_BITS = 2048
MADE_BY = "fruits-emr"  # the object's x-amz-meta-made-by: a certificate `deploy` made and may replace


class Unmade(Exception):
    """openssl could not make the certificate, or made one that is not
    right; the message says which (never with the key)."""


def domain(region: str) -> str:
    """The private DNS domain of the region's instances (the VPC's default
    DHCP options): us-east-1 alone has its own."""
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def names(region: str) -> str:
    """The certificate's one name: a wildcard covering every node's private
    DNS name (one label), as EMR's documentation and Hadoop's default host
    name verifier want it (in the CN as well as the subjectAltName)."""
    return f"*.{domain(region)}"


@dataclasses.dataclass(frozen=True)
class Certificate:
    """What can be said of the certificate (all public)."""
    pem: bytes
    names: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    sha256: str  # of its DER: openssl's fingerprint, lowercase, no colons

    def metadata(self) -> dict:
        """The S3 object's metadata (x-amz-meta-*), read back by `held`."""
        return {"made-by": MADE_BY, "names": self.names, "not-after": _iso(self.not_after),
                "certificate-sha256": self.sha256}

    def describe(self) -> str:
        return f"{self.names}, valid until {_iso(self.not_after)}, sha256 {self.sha256[:16]}…"


@dataclasses.dataclass(frozen=True)
class Bundle:
    """The certificate and the zip EMR reads (the zip holds the private
    key: never in a repr, never printed)."""
    certificate: Certificate
    zip: bytes = dataclasses.field(repr=False)


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def _openssl(args: list, stdin: bytes = b"", what: str = "") -> bytes:
    """openssl's stdout; its stderr (which never holds what it read on
    stdin) in the error."""
    try:
        out = subprocess.run(["openssl"] + args, input=stdin, capture_output=True, timeout=120)
    except OSError as e:
        raise Unmade(f"cannot run openssl ({e}): fruits-emr makes the in-transit certificate with it") from None
    if out.returncode != 0:
        raise Unmade(f"openssl {args[0]} ({what}) exited {out.returncode}: "
                     f"{out.stderr.decode(errors='replace').strip()[-400:]}")
    return out.stdout


# The whole request: no prompt, nothing from the system's openssl.cnf.
CONFIG = """[req]
prompt = no
distinguished_name = subject
x509_extensions = leaf

[subject]
O = fruits
CN = {names}

[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:{names}
subjectKeyIdentifier = hash
"""


def _date(text: str) -> datetime.datetime:
    """openssl's `notAfter=Jan  5 10:00:00 2027 GMT` value."""
    return datetime.datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=datetime.timezone.utc)


def describe_pem(pem: bytes) -> Certificate:
    """The certificate's names, dates and fingerprint, as openssl reads them."""
    out = _openssl(["x509", "-noout", "-subject", "-startdate", "-enddate", "-fingerprint", "-sha256",
                    "-nameopt", "RFC2253"], pem, "reading the certificate").decode()
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    subject = fields.get("subject", "")
    cn = next((p[3:] for p in subject.split(",") if p.startswith("CN=")), "")
    fingerprint = next(v for k, v in fields.items() if k.endswith("Fingerprint"))
    return Certificate(pem=pem, names=cn, not_before=_date(fields["notBefore"]), not_after=_date(fields["notAfter"]),
                       sha256=fingerprint.replace(":", "").lower())


def make(region: str, days: int = VALID_DAYS) -> Bundle:
    """A new key and certificate for `region`'s nodes, checked (the key is
    the certificate's), zipped in memory as EMR reads them."""
    name = names(region)
    key = _openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{RSA_BITS}"], what="the key")
    with tempfile.TemporaryDirectory(prefix="fruits-tls-") as tmp:  # 0700; removed with what it holds
        config = os.path.join(tmp, "request.cnf")  # the request only: no key
        with open(config, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(names=name))
        # The key on stdin, the certificate on stdout.
        pem = _openssl(["req", "-new", "-x509", "-key", "/dev/stdin", "-config", config, "-sha256",
                        "-days", str(days)], key, "the certificate")
    if _openssl(["pkey", "-pubout"], key, "the key's public half") != \
            _openssl(["x509", "-noout", "-pubkey"], pem, "the certificate's public key"):
        raise Unmade("openssl made a certificate whose public key is not the key's")
    cert = describe_pem(pem)
    if cert.names != name:
        raise Unmade(f"openssl made a certificate for {cert.names!r}, not {name!r}")
    return Bundle(certificate=cert, zip=pack(key, pem))


def pack(key: bytes, pem: bytes) -> bytes:
    """The zip of EMR's three files, built in memory (members 0600, as the
    nodes' copies should be: the key is one of them). Self-signed: the
    chain is the certificate, and so is what the nodes trust."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for member, data in zip(MEMBERS, (key, pem, pem), strict=True):
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100600 << 16  # a regular file, rw-------
            z.writestr(info, data)
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class Held:
    """The object in the bucket, as its HeadObject shows it."""
    made_by: str
    names: str
    not_after: Optional[datetime.datetime]
    sha256: str

    @staticmethod
    def of(head: dict) -> "Held":
        m = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return Held(made_by=m.get("made-by", ""), names=m.get("names", ""),
                    not_after=parse_iso(m.get("not-after")), sha256=m.get("certificate-sha256", ""))

    def ours(self) -> bool:
        return self.made_by == MADE_BY

    def describe(self) -> str:
        if not self.ours():
            return "not made by fruits-emr (no x-amz-meta-made-by: fruits-emr): its names and expiry are yours"
        until = _iso(self.not_after) if self.not_after else "an unreadable date"
        return f"{self.names}, valid until {until}, sha256 {self.sha256[:16]}…"


def held(aws, bucket: str) -> Optional[Held]:
    """The certificate's object as the bucket holds it; None when there is
    none (or in a dry run)."""
    try:
        head = aws.call("s3", "HeadObject", Bucket=bucket, Key=KEY)
    except Exception as e:  # botocore's ClientError
        if any(s in str(e) for s in ("404", "Not Found", "NoSuchKey")):
            return None
        raise
    return Held.of(head) if head is not None else None


def reason_to_make(current: Optional[Held], region: str, now: datetime.datetime, rotate: bool) -> Optional[str]:
    """Why `deploy` makes a new certificate, or None when it keeps the one
    in the bucket."""
    if current is None:
        return "there is none in the bucket yet"
    if rotate:
        return "--rotate-tls"
    if not current.ours():
        return None  # the operator's own: kept
    if current.names != names(region):
        return f"it names {current.names or 'nothing'}, not {names(region)}: the nodes of {region}"
    if current.not_after is None:
        return "its expiry is not readable from its metadata"
    if current.not_after - now < datetime.timedelta(days=RENEW_DAYS):
        return f"it expires {_iso(current.not_after)}, within {RENEW_DAYS} days"
    return None


def upload(aws, bucket: str, kms_key: str, bundle: Optional[Bundle], region: str) -> None:
    """Puts the zip, encrypted with the project's key, its certificate's
    facts as metadata. `bundle` None: a dry run, which shows the request
    with what the zip would hold, and makes no key."""
    if bundle is None:
        body = f"<zip of {', '.join(MEMBERS)}: a new RSA-{RSA_BITS} key and its self-signed certificate, made here>"
        metadata = {"made-by": MADE_BY, "names": names(region), "not-after": f"<{VALID_DAYS} days from now>",
                    "certificate-sha256": "<sha256 of the certificate>"}
    else:
        body, metadata = bundle.zip, bundle.certificate.metadata()
    aws.call("s3", "PutObject", Bucket=bucket, Key=KEY, Body=body, ContentType="application/zip",
             ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key, BucketKeyEnabled=True, Metadata=metadata)
