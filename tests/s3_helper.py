"""Test-side S3 helper: a real S3-compatible server (moto in server mode) on
loopback, a fault-injecting proxy in front of it, and boto3 for setting up
buckets and reading results. Used by tests/test_s3.rs and benches/s3_fetch.sh.

    s3_helper.py serve                           run moto on 127.0.0.1, print "ready PORT"
    s3_helper.py proxy UPSTREAM_PORT [--fail-every N] [--drop-every M] [--delay-ms D]
                                     [--regional 1] [--deny-list BUCKET] [--record FILE]
                                     [--tls DIR]
                                                 the same, for a proxy in front of it
    s3_helper.py bucket ENDPOINT NAME REGION
    s3_helper.py upload ENDPOINT DIR BUCKET PREFIX
    s3_helper.py many ENDPOINT BUCKET PREFIX COUNT [FILE]  COUNT .jpg objects (FILE's bytes, or 1 byte)
    s3_helper.py get ENDPOINT BUCKET KEY FILE
    s3_helper.py keys ENDPOINT BUCKET PREFIX         print the keys, one per line
    s3_helper.py cat ENDPOINT BUCKET KEY             print an object
    s3_helper.py put ENDPOINT BUCKET KEY FILE        put a file as one object
"""
import http.client
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time

import boto3

CREDS = {"aws_access_key_id": "test-key-id", "aws_secret_access_key": "test-secret-key"}


def client(endpoint, region="eu-west-1"):
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, **CREDS)


SIGNING_REGION = re.compile(r"Credential=[^/]+/\d+/([^/]+)/[^/]+/aws4_request")


def tls_context(folder):
    """A server context for HTTPS on 127.0.0.1: a new certificate authority
    (its certificate written to FOLDER/ca.pem, for a client to trust or
    not) and a server certificate for the IP 127.0.0.1 signed by it."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, key, issuer_key, ca):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fruits test CA")])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = (b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                 critical=False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    with open(os.path.join(folder, "ca.pem"), "wb") as f:
        f.write(certificate("fruits test CA", ca_key, ca_key, True).public_bytes(pem))
    leaf, leaf_key = os.path.join(folder, "server.pem"), os.path.join(folder, "server.key")
    with open(leaf, "wb") as f:
        f.write(certificate("127.0.0.1", key, ca_key, False).public_bytes(pem))
    with open(leaf_key, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf, leaf_key)
    return context


def proxy(upstream, fail_every=0, drop_every=0, delay_ms=0, regional=0, deny_list=0, record="", tls=""):
    """Forwards each request to moto; every `fail_every`-th answers 503
    SlowDown, every `drop_every`-th closes the connection without an answer.

    `regional`: behaves as AWS does across regions: a request signed for
    another region than its bucket's gets 301 PermanentRedirect with the
    bucket's region in `x-amz-bucket-region` (a HEAD: the header alone);
    GetBucketLocation answers from anywhere.
    `deny_list`: a bucket whose ListObjects answers 403 AccessDenied, as a
    bucket policy without s3:ListBucket does.
    `record`: appends every request (method, path, X-Amz-Target, signing
    region, body as text) to this file, one JSON object a line, so a test
    can check what a tool sent.
    `tls`: a folder: answers HTTPS instead of HTTP, with a certificate from
    a new authority whose own certificate it writes to `tls`/ca.pem."""
    count = {"n": 0}
    lock = threading.Lock()
    regions = {}

    def bucket_region(bucket):
        if bucket not in regions:
            try:
                loc = client(f"http://127.0.0.1:{upstream}").get_bucket_location(Bucket=bucket)
                regions[bucket] = loc.get("LocationConstraint") or "us-east-1"
            except Exception:
                regions[bucket] = None  # no such bucket: let moto answer
        return regions[bucket]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle_one(self):
            with lock:
                count["n"] += 1
                n = count["n"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if record:
                signing = SIGNING_REGION.search(self.headers.get("Authorization", ""))
                entry = {"method": self.command, "path": self.path, "target": self.headers.get("X-Amz-Target"),
                         "region": signing.group(1) if signing else None,
                         "body": (body or b"")[:100000].decode("utf-8", "replace")}
                with lock, open(record, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            if delay_ms:
                time.sleep(delay_ms / 1000)
            if drop_every and n % drop_every == 0:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            path, _, query = self.path.partition("?")
            bucket = path.lstrip("/").split("/")[0]
            if bucket == deny_list and self.command == "GET" and path.strip("/") == bucket and "location" not in query:
                self.answer(403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
                return
            home = bucket_region(bucket) if regional and bucket else None
            match = SIGNING_REGION.search(self.headers.get("Authorization", ""))
            signed = match.group(1) if match else None
            if home and signed != home and not (self.command == "GET" and query.startswith("location")):
                body = b"" if self.command == "HEAD" else (
                    b"<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access "
                    b"must be addressed using the specified endpoint.</Message>"
                    b"<Bucket>" + bucket.encode() + b"</Bucket></Error>")
                self.answer(301, body, {"x-amz-bucket-region": home})
                return
            if fail_every and n % fail_every == 0:
                msg = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
            bucket_head = home and self.command == "HEAD" and path.strip("/") == bucket
            extra = {"x-amz-bucket-region": home} if bucket_head else {}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(k, v)
            for k, v in extra.items():
                if resp.getheader(k) is None:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        def answer(self, status, body, headers=()):
            self.send_response(status)
            for k, v in dict(headers).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    if tls:
        server.socket = tls_context(tls).wrap_socket(server.socket, server_side=True)
    print("ready", server.server_address[1], flush=True)
    server.serve_forever()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        from moto.server import ThreadedMotoServer
        # Port 0: the OS picks a free port, so parallel tests never collide.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        print("ready", server.get_host_and_port()[1], flush=True)
        threading.Event().wait()
    elif cmd == "proxy":
        opts = {"fail_every": 0, "drop_every": 0, "delay_ms": 0, "regional": 0, "deny_list": "", "record": "",
                "tls": ""}
        rest = args[1:]
        for i in range(0, len(rest), 2):
            value = rest[i + 1]
            opts[rest[i].lstrip("-").replace("-", "_")] = int(value) if value.isdigit() else value
        proxy(int(args[0]), **opts)
    elif cmd == "bucket":
        endpoint, name, region = args
        kw = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        client(endpoint, region).create_bucket(Bucket=name, **kw)
    elif cmd == "upload":
        endpoint, root, bucket, prefix = args
        s3 = client(endpoint)
        for d, _, files in os.walk(root):
            for f in sorted(files):
                p = os.path.join(d, f)
                s3.upload_file(p, bucket, prefix + os.path.relpath(p, root).replace(os.sep, "/"))
    elif cmd == "many":
        endpoint, bucket, prefix, count = args[:4]
        body = open(args[4], "rb").read() if len(args) > 4 else b"x"
        s3 = client(endpoint)
        for i in range(int(count)):
            s3.put_object(Bucket=bucket, Key=f"{prefix}{i:05d}.jpg", Body=body)
    elif cmd == "get":
        endpoint, bucket, key, path = args
        client(endpoint).download_file(bucket, key, path)
    elif cmd == "put":
        endpoint, bucket, key, path = args
        client(endpoint).put_object(Bucket=bucket, Key=key, Body=open(path, "rb").read())
    elif cmd == "cat":
        endpoint, bucket, key = args
        sys.stdout.buffer.write(client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
    elif cmd == "keys":
        endpoint, bucket, prefix = args
        pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for o in page.get("Contents", []):
                print(o["Key"])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
