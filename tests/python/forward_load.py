"""End-to-end load for the forward source: CONNS connections each send PackedForward messages
(1,000 records of ~200 bytes of JSON) and wait for every ack, like out_forward with
require_ack_response. Prints records/s and MB/s (of msgpack sent) after SECONDS.

Usage: forward_load.py PORT SECONDS [CONNS]
"""
import base64
import os
import socket
import sys
import threading
import time

import msgpack

RECORDS = 1000


def message(chunk):
    rec = {"host": "web-12.prod.example.com", "level": "info", "method": "GET",
           "path": "/api/v1/items/1234567?expand=owner",
           "message": "request completed \"ok\" for user 42 in region ap-northeast-1",
           "status": 200, "latency_ms": 12.5}
    payload = b"".join(msgpack.packb([int(time.time()), rec]) for _ in range(RECORDS))
    return msgpack.packb(["bench.load", payload, {"chunk": chunk, "size": RECORDS}], use_bin_type=True)


def worker(port, deadline, counts, idx):
    sock = socket.create_connection(("127.0.0.1", port))
    unpacker = msgpack.Unpacker(raw=True)
    chunk = base64.b64encode(os.urandom(16)).decode()
    msg = message(chunk)
    want = {b"ack": chunk.encode()}
    sent = 0
    while time.time() < deadline:
        sock.sendall(msg)
        got = None
        while got is None:
            for obj in unpacker:
                got = obj
                break
            if got is None:
                data = sock.recv(65536)
                if not data:
                    raise SystemExit("connection closed")
                unpacker.feed(data)
        if got != want:
            raise SystemExit("bad ack %r" % (got,))
        sent += 1
    counts[idx] = (sent, len(msg))
    sock.close()


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    counts = [None] * conns
    start = time.time()
    deadline = start + seconds
    threads = [threading.Thread(target=worker, args=(port, deadline, counts, i)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    msgs = sum(c[0] for c in counts)
    size = counts[0][1]
    print("connections=%d messages=%d records=%d elapsed=%.2fs records/s=%.0f MB/s(msgpack)=%.1f"
          % (conns, msgs, msgs * RECORDS, elapsed, msgs * RECORDS / elapsed, msgs * size / elapsed / 1e6))


if __name__ == "__main__":
    main()
