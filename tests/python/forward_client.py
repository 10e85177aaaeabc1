"""Third-party clients for the forward source's interop tests.

Usage: forward_client.py MODE PORT [ARGS...]
  logger PORT            fluent-logger's FluentSender (Message mode, int and EventTime)
  ack PORT               msgpack over a raw socket: every mode with a `chunk` option, checking
                         each ack like out_forward's require_ack_response does
  handshake PORT KEY ok|fail [USER PASSWORD]
                         shared_key handshake (HELO/PING/PONG), with a username/password
                         when given (digest over the HELO's auth salt), then one acked message
Exits non-zero with a message on any mismatch.
"""
import base64
import gzip
import hashlib
import os
import socket
import sys
import time

import msgpack
from fluent import sender


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def read_one(sock, unpacker):
    while True:
        for obj in unpacker:
            return obj
        data = sock.recv(65536)
        if not data:
            return None
        unpacker.feed(data)


def logger(port):
    s = sender.FluentSender("py", host="127.0.0.1", port=port, nanosecond_precision=True)
    ok = s.emit("logger", {"msg": "logger-1", "nested": {"list": [1, 2.5, None, True]}, "uni": "héllo ✓"})
    ok = ok and s.emit_with_time("logger", 1600000000.123456789, {"msg": "logger-2"})
    s.close()
    plain = sender.FluentSender("py", host="127.0.0.1", port=port)
    ok = ok and plain.emit_with_time("int", 1600000001, {"msg": "logger-3"})
    plain.close()
    if not ok:
        fail("FluentSender.emit returned False: %r" % (s.last_error,))
    print("ok")


def chunk_id():
    return base64.b64encode(os.urandom(16)).decode()


def expect_ack(sock, unpacker, chunk, what):
    reply = read_one(sock, unpacker)
    if reply != {b"ack": chunk.encode()}:
        fail("%s: expected ack %r, got %r" % (what, chunk, reply))


def entry(t, msg):
    return msgpack.packb([t, {"msg": msg}])


def ack(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    unpacker = msgpack.Unpacker(raw=True)
    now = int(time.time())
    et = msgpack.ExtType(0, (1600000000).to_bytes(4, "big") + (5).to_bytes(4, "big"))

    c = chunk_id()
    sock.sendall(msgpack.packb(["py.ack", now, {"msg": "ack-message"}, {"chunk": c}]))
    expect_ack(sock, unpacker, c, "Message")

    c = chunk_id()
    sock.sendall(msgpack.packb(["py.ack", [[now, {"msg": "ack-forward-1"}], [et, {"msg": "ack-forward-2"}]],
                                {"chunk": c, "size": 2}]))
    expect_ack(sock, unpacker, c, "Forward")

    c = chunk_id()
    payload = entry(now, "ack-packed-1") + entry(et, "ack-packed-2")
    sock.sendall(msgpack.packb(["py.ack", payload, {"chunk": c, "size": 2}], use_bin_type=True))
    expect_ack(sock, unpacker, c, "PackedForward")

    c = chunk_id()
    # Two gzip members, as a client compressing entry by entry produces.
    payload = gzip.compress(entry(now, "ack-gzip-1")) + gzip.compress(entry(et, "ack-gzip-2"))
    sock.sendall(msgpack.packb(["py.ack", payload, {"chunk": c, "size": 2, "compressed": "gzip"}],
                               use_bin_type=True))
    expect_ack(sock, unpacker, c, "CompressedPackedForward")
    sock.close()
    print("ok")


def handshake(port, key, expect, user="", password=""):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    unpacker = msgpack.Unpacker(raw=True)
    helo = read_one(sock, unpacker)
    if not (isinstance(helo, list) and helo[0] == b"HELO"):
        fail("expected HELO, got %r" % (helo,))
    nonce = helo[1][b"nonce"]
    auth = helo[1][b"auth"]
    salt = os.urandom(16)
    hostname = b"python-client"
    digest = hashlib.sha512(salt + hostname + nonce + key.encode()).hexdigest()
    # Fluentd's out_forward: password digest = hex(sha512(auth salt + username + password)).
    pass_digest = ""
    if user:
        pass_digest = hashlib.sha512(auth + user.encode() + password.encode()).hexdigest()
    sock.sendall(msgpack.packb(["PING", hostname, salt, digest, user, pass_digest], use_bin_type=True))
    pong = read_one(sock, unpacker)
    if expect == "fail":
        if not (pong and pong[0] == b"PONG" and pong[1] is False and pong[2]):
            fail("expected a refusing PONG, got %r" % (pong,))
        if read_one(sock, unpacker) is not None:
            fail("connection not closed after refusal")
        print("ok")
        return
    if not (pong and pong[0] == b"PONG" and pong[1] is True):
        fail("expected PONG true, got %r" % (pong,))
    server_digest = hashlib.sha512(salt + pong[3] + nonce + key.encode()).hexdigest()
    if pong[4].decode() != server_digest:
        fail("server digest mismatch")
    c = chunk_id()
    sock.sendall(msgpack.packb(["py.secure", int(time.time()), {"msg": "secure"}, {"chunk": c}]))
    expect_ack(sock, unpacker, c, "after handshake")
    print("ok")


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "logger":
        logger(port)
    elif mode == "ack":
        ack(port)
    elif mode == "handshake":
        handshake(port, *sys.argv[3:])
    else:
        fail("unknown mode " + mode)
