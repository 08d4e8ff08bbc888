"""The in-transit certificate fruits-emr makes (emr/fruits_emr/tls.py), read
back by tools that are not its maker: `openssl x509 -text` for its names,
validity and key usage, `openssl pkey` for its key, a TLS handshake in
Python (OpenSSL) and one in a JVM (Hadoop's and Spark's runtime, the key
and trust stores built from the zip as EMR builds them) with the host
names the nodes have, and a name they do not. The zip as `deploy` puts it
in the bucket: test_tool_moto.py."""

import datetime
import hashlib
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import zipfile

import pytest
from conftest import EMR

sys.path.insert(0, EMR)
from fruits_emr import commands, regions, tls  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = "ip-10-80-3-7.eu-west-1.compute.internal"  # a node's private DNS name in the stack's subnet (10.80.0.0/20)
NOT_NODES = ["ip-10-80-3-7.eu-central-1.compute.internal",  # another region's node
             "eu-west-1.compute.internal",  # the domain itself
             "a.ip-10-80-3-7.eu-west-1.compute.internal",  # two labels down
             "ip-10-80-3-7.ec2.internal"]


def openssl(*args, stdin=b""):
    out = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def unzip(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {i.filename: (z.read(i), i.external_attr >> 16) for i in z.infolist()}


def check_bundle(data: bytes, region: str = "eu-west-1", days: int = tls.VALID_DAYS) -> dict:
    """Checks the zip as EMR and the nodes read it; returns its files."""
    members = unzip(data)
    # EMR's documented names, exactly, nothing else; the files rw------- (the key is one of them).
    assert sorted(members) == ["certificateChain.pem", "privateKey.pem", "trustedCertificates.pem"]
    assert {mode for _, mode in members.values()} == {0o100600}
    key, chain, trusted = (members[n][0] for n in ("privateKey.pem", "certificateChain.pem", "trustedCertificates.pem"))
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----\n") and chain.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert chain.count(b"BEGIN CERTIFICATE") == 1 and trusted == chain, "self-signed: the chain is what is trusted"
    text = openssl("x509", "-noout", "-text", stdin=chain).decode()
    wildcard = f"*.{region}.compute.internal"
    assert re.search(rf"Subject: O = fruits, CN = {re.escape(wildcard)}\n", text), text
    assert re.search(rf"Issuer: O = fruits, CN = {re.escape(wildcard)}\n", text), text
    assert re.search(rf"X509v3 Subject Alternative Name: *\n *DNS:{re.escape(wildcard)}\n", text), text
    assert re.search(r"X509v3 Basic Constraints: critical\n *CA:FALSE\n", text), text
    assert re.search(r"X509v3 Key Usage: critical\n *Digital Signature, Key Encipherment\n", text), text
    assert re.search(r"X509v3 Extended Key Usage: *\n *TLS Web Server Authentication, TLS Web Client Authentication\n",
                     text), text
    assert "Public-Key: (2048 bit)" in text and "Signature Algorithm: sha256WithRSAEncryption" in text
    # Valid from now for the stated days.
    dates = openssl("x509", "-noout", "-startdate", "-enddate", stdin=chain).decode().splitlines()
    not_before, not_after = (datetime.datetime.strptime(" ".join(line.split("=", 1)[1].split()),
                                                        "%b %d %H:%M:%S %Y %Z") for line in dates)
    assert not_after - not_before == datetime.timedelta(days=days)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - not_before).total_seconds()) < 600, dates
    # The key is the certificate's.
    assert openssl("pkey", "-pubout", stdin=key) == openssl("x509", "-noout", "-pubkey", stdin=chain)
    return {n: v for n, (v, _) in members.items()}


def test_the_certificate_names_the_regions_nodes_and_its_key_is_its_own(tmp_path, monkeypatch):
    # Every temporary file of make() in a folder of the test's: none is left behind.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    bundle = tls.make("eu-west-1")
    assert os.listdir(scratch) == []
    files = check_bundle(bundle.zip)
    cert = bundle.certificate
    assert cert.pem == files["certificateChain.pem"] and cert.names == "*.eu-west-1.compute.internal"
    assert cert.not_after - cert.not_before == datetime.timedelta(days=365)
    der = openssl("x509", "-outform", "DER", stdin=cert.pem)
    assert cert.sha256 == hashlib.sha256(der).hexdigest()
    assert cert.metadata() == {"made-by": "fruits-emr", "names": "*.eu-west-1.compute.internal",
                               "not-after": cert.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "certificate-sha256": cert.sha256}
    # Never the key in what can be printed.
    assert "PRIVATE" not in repr(bundle) and files["privateKey.pem"].decode() not in repr(bundle)
    # Another region, another name; a new certificate, a new key.
    other = tls.make("eu-central-1", days=30)
    check_bundle(other.zip, region="eu-central-1", days=30)
    assert unzip(other.zip)["privateKey.pem"] != unzip(bundle.zip)["privateKey.pem"]


def written(tmp_path, data: bytes) -> dict:
    """The zip's files, written for the TLS libraries (which read files)."""
    out = {}
    for name, body in check_bundle(data).items():
        path = tmp_path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        out[name] = str(path)
    return out


def test_a_tls_handshake_accepts_a_nodes_name_and_refuses_others(tmp_path):
    """OpenSSL (Python's ssl), both sides authenticated, host name checked."""
    pem = written(tmp_path, tls.make("eu-west-1").zip)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pem["certificateChain.pem"], pem["privateKey.pem"])
    server_ctx.load_verify_locations(pem["trustedCertificates.pem"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # the client's certificate too (clientAuth)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    client_ctx.load_verify_locations(pem["trustedCertificates.pem"])
    client_ctx.load_cert_chain(pem["certificateChain.pem"], pem["privateKey.pem"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(b"1")
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()

    def handshake(name):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=name) as s:
                return s.recv(1)

    try:
        assert handshake(NODE) == b"1"
        for name in NOT_NODES:
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                handshake(name)
    finally:
        listener.close()


def test_a_jvm_handshake_accepts_a_nodes_name_and_refuses_others(tmp_path):
    """Java's TLS (the runtime of Hadoop and Spark on the nodes), with a key
    store and a trust store made from the zip's files as EMR makes its own,
    both sides authenticated, host names checked as HTTPS does."""
    java = shutil.which("java")
    assert java, "java (pyspark's runtime) is needed"
    pem = written(tmp_path, tls.make("eu-west-1").zip)
    keystore, truststore, password = tmp_path / "keystore.p12", tmp_path / "truststore.p12", "test-password"
    openssl("pkcs12", "-export", "-inkey", pem["privateKey.pem"], "-in", pem["certificateChain.pem"],
            "-name", "node", "-passout", f"pass:{password}", "-out", str(keystore))
    made = subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "trusted", "-file",
                           pem["trustedCertificates.pem"], "-keystore", str(truststore), "-storetype", "PKCS12",
                           "-storepass", password], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    out = subprocess.run([java, os.path.join(HERE, "TlsHandshake.java"), str(keystore), str(truststore), password,
                          NODE, *NOT_NODES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    said = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert said[NODE] == "ok", out.stdout
    for name in NOT_NODES:
        assert said[name].startswith("refused: javax.net.ssl.SSLHandshakeException: No subject alternative DNS name"), \
            out.stdout


def test_deploy_keeps_a_certificate_until_it_nears_its_end():
    now = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)

    def held(names="*.eu-west-1.compute.internal", not_after="2027-06-01T00:00:00Z", made_by="fruits-emr"):
        return tls.Held.of({"Metadata": {"made-by": made_by, "names": names, "not-after": not_after,
                                         "certificate-sha256": "ab" * 32}})

    why = lambda current, rotate=False: tls.reason_to_make(current, "eu-west-1", now, rotate)  # noqa: E731
    assert why(None) == "there is none in the bucket yet"
    assert why(held()) is None, "kept"
    assert why(held(), rotate=True) == "--rotate-tls"
    assert why(held(not_after="2027-01-30T00:00:00Z")) == "it expires 2027-01-30T00:00:00Z, within 30 days"
    assert why(held(not_after="2026-12-01T00:00:00Z")).startswith("it expires")
    assert why(held(names="*.eu-central-1.compute.internal")) == \
        "it names *.eu-central-1.compute.internal, not *.eu-west-1.compute.internal: the nodes of eu-west-1"
    assert why(held(not_after="soon")) == "its expiry is not readable from its metadata"
    # The operator's own certificate (not made by fruits-emr) is theirs: kept, whatever its metadata.
    assert why(held(made_by="", names="", not_after="2020-01-01T00:00:00Z")) is None
    assert why(held(made_by=""), rotate=True) == "--rotate-tls"
    assert tls.names("eu-south-2") == "*.eu-south-2.compute.internal"


class StackWithNothingToUpdate:
    """What deploy meets when the stack is as the template and parameters
    already say: CloudFormation refuses the update (moto updates anyway).
    The bucket holds no certificate."""
    dry_run = False
    region = "eu-west-1"
    europe = regions.Europe(codes=("eu-west-1", "eu-central-1"), default="eu-west-1")

    def __init__(self, update_error="No updates are to be performed."):
        self.calls, self.update_error = [], update_error

    def call(self, service, op, **params):
        self.calls.append((op, params))
        if op == "DescribeStacks":
            return {"Stacks": [{"StackStatus": "UPDATE_COMPLETE",
                                "Outputs": [{"OutputKey": "KmsKey", "OutputValue": "arn:aws:kms:eu-west-1:1:key/k"}]}]}
        if op == "UpdateStack":
            raise RuntimeError(f"An error occurred (ValidationError) when calling the UpdateStack operation: "
                               f"{self.update_error}")
        if op == "HeadObject":
            raise RuntimeError("An error occurred (404) when calling the HeadObject operation: Not Found")
        return {}


def test_a_deploy_with_nothing_to_update_in_the_stack_still_puts_the_certificate(capsys):
    aws = StackWithNothingToUpdate()
    commands.deploy(aws, "fruits-demo")
    said = capsys.readouterr().out
    assert "stack fruits-fruits-demo: UPDATE_COMPLETE (unchanged: nothing to update)" in said
    (put,) = [p for op, p in aws.calls if op == "PutObject"]
    assert put["Key"] == tls.KEY and (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == \
        ("aws:kms", "arn:aws:kms:eu-west-1:1:key/k")
    check_bundle(put["Body"])
    assert "made, since there is none in the bucket yet" in said and "PRIVATE" not in said
    # Any other refusal is a failure, and no certificate goes up.
    other = StackWithNothingToUpdate("Stack fruits-fruits-demo is in UPDATE_IN_PROGRESS state")
    with pytest.raises(RuntimeError, match="UPDATE_IN_PROGRESS"):
        commands.deploy(other, "fruits-demo")
    assert "PutObject" not in [op for op, _ in other.calls]
