"""Hostile clients for benches/serve.sh: while the good clients (wrk) load
`fruits serve`, these try to stall it, for SECONDS, and then report what
they got:

- silent: sockets that connect and send nothing (reopened as the server
  closes them), and as many that send part of an HTTP/2 preface;
- slow: uploads of a real photo trickled one byte every 200 ms;
- bombs: a 4.7 MB PNG that declares 16384 x 16384 RGBA pixels (1 GiB
  decoded), posted back to back.

    hostile_clients.py URL SECONDS [SILENT] [SLOW] [BOMBS]

Prints one JSON line: what each kind did and what the server answered.
"""

import collections
import json
import socket
import struct
import sys
import threading
import time
import zlib

PHOTO = "tests/data/fruits-360-sample/Test/Apple/f0_100.jpg"


def png_bomb(side: int) -> bytes:
    """All-zero RGBA pixels, deflated: small on the wire, huge decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    comp = zlib.compressobj(1)
    row = b"\0" * (side * 4 + 1)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def status_of(reply: bytes) -> str:
    parts = reply.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and reply.startswith(b"HTTP/") else "closed"


def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    silent, slow, bombs = (int(a) for a in (sys.argv[3:6] + ["16", "16", "2"][len(sys.argv) - 3:]))
    host, port = url.split("//")[1].split(":")
    addr = (host, int(port))
    end = time.time() + seconds
    counts = collections.Counter()
    lock = threading.Lock()

    def count(key):
        with lock:
            counts[key] += 1

    def hold(first_bytes):
        while time.time() < end:
            try:
                s = socket.create_connection(addr, timeout=5)
                s.sendall(first_bytes)
                count("silent_opened")
                s.settimeout(max(0.1, end - time.time()))
                s.recv(1)  # returns when the server closes it
                count("silent_closed_by_server")
            except OSError:
                pass
            # Back for the slot a moment later, not in a tight loop: a flood
            # of connections is another attack (and would only measure this
            # script's CPU on a small machine).
            time.sleep(0.5)

    photo = open(PHOTO, "rb").read()

    def trickle():
        while time.time() < end:
            try:
                s = socket.create_connection(addr, timeout=5)
                s.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(photo))
                count("slow_started")
                s.setblocking(False)
                reply = b""
                for byte in photo:
                    if time.time() > end:
                        break
                    try:
                        s.sendall(bytes([byte]))
                        reply = s.recv(4096)
                        if reply:
                            break
                    except BlockingIOError:
                        pass
                    except OSError:
                        break
                    time.sleep(0.2)
                if not reply:  # cut off mid-write: the answer may be waiting
                    try:
                        s.setblocking(True)
                        s.settimeout(2)
                        reply = s.recv(4096)
                    except OSError:
                        pass
                count("slow_" + status_of(reply))
            except OSError:
                pass

    bomb = png_bomb(16384)

    def detonate():
        while time.time() < end:
            try:
                s = socket.create_connection(addr, timeout=30)
                s.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(bomb) + bomb)
                count("bomb_" + status_of(s.recv(64)))
            except OSError:
                count("bomb_error")

    threads = [threading.Thread(target=hold, args=(b"",)) for _ in range(silent)]
    threads += [threading.Thread(target=hold, args=(b"PRI * HTTP/2.0\r\n\r\nSM",)) for _ in range(silent)]
    threads += [threading.Thread(target=trickle) for _ in range(slow)]
    threads += [threading.Thread(target=detonate) for _ in range(bombs)]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(timeout=max(0, end - time.time()) + 40)
    print(json.dumps({"seconds": seconds, "silent": 2 * silent, "slow": slow, "bombs": bombs,
                      "bomb_bytes": len(bomb), "counts": dict(sorted(counts.items()))}))


if __name__ == "__main__":
    main()
