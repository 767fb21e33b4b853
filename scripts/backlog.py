#!/usr/bin/env python3
"""Publishes a backlog of persistent messages to a durable queue, or drains one.

A small raw AMQP 0-9-1 client (pre-encoded frames, batched writes) so that Python is not
what limits the figures. Used by scripts/bench-backlog.sh to measure the broker's peak
RSS with a long durable queue and its recovery time; works against RabbitMQ too.

    backlog.py publish --port 5672 --queue backlog --count 1000000 --size 1024
    backlog.py drain   --port 5672 --queue backlog --count 1000000
"""
import argparse
import socket
import struct
import sys
import time

FRAME_END = b"\xce"


def shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def longstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class Conn:
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # start
        response = b"\x00guest\x00guest"
        self.sock.sendall(method(0, 10, 11, struct.pack(">I", 0) + shortstr(b"PLAIN")
                                 + longstr(response) + shortstr(b"en_US")))
        _, _, _, args = self.expect(10, 30)  # tune
        channel_max, frame_max, _ = struct.unpack(">HIH", args[:8])
        self.frame_max = frame_max or 131072
        self.sock.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, self.frame_max, 0)))
        self.sock.sendall(method(0, 10, 40, shortstr(b"/") + shortstr(b"") + b"\x00"))
        self.expect(10, 41)
        self.sock.sendall(method(1, 20, 10, shortstr(b"")))
        self.expect(20, 11)

    def read_frame(self):
        """Returns (type, channel, payload), reading more from the socket as needed."""
        while True:
            if len(self.buf) >= 7:
                kind, channel, size = struct.unpack_from(">BHI", self.buf)
                if len(self.buf) >= 8 + size:
                    payload = bytes(self.buf[7:7 + size])
                    del self.buf[:8 + size]
                    return kind, channel, payload
            data = self.sock.recv(1 << 20)
            if not data:
                raise SystemExit("broker closed the connection")
            self.buf += data

    def expect(self, class_id: int, method_id: int):
        while True:
            kind, channel, payload = self.read_frame()
            if kind != 1:
                continue
            c, m = struct.unpack_from(">HH", payload)
            if (c, m) in ((10, 50), (20, 40)):
                code, = struct.unpack_from(">H", payload, 4)
                text = payload[7:7 + payload[6]].decode()
                raise SystemExit(f"closed by broker: {code} {text}")
            if (c, m) == (class_id, method_id):
                return kind, channel, (c, m), payload[4:]

    def declare(self, queue: bytes):
        # queue.declare durable
        self.sock.sendall(method(1, 50, 10, b"\x00\x00" + shortstr(queue) + b"\x02"
                                 + struct.pack(">I", 0)))
        _, _, _, args = self.expect(50, 11)
        n = args[0]
        messages, consumers = struct.unpack_from(">II", args, 1 + n)
        return messages, consumers


def publish(args):
    c = Conn(args.host, args.port)
    queue = args.queue.encode()
    c.declare(queue)
    c.sock.sendall(method(1, 85, 10, b"\x00"))  # confirm.select
    c.expect(85, 11)
    body = b"x" * args.size
    # delivery-mode 2 only: property flags 0x1000
    header = frame(2, 1, struct.pack(">HHQH", 60, 0, len(body), 0x1000) + b"\x02")
    one = (method(1, 60, 40, b"\x00\x00" + shortstr(b"") + shortstr(queue) + b"\x00")
           + header + frame(3, 1, body))
    window = args.window
    sent = acked = 0
    start = time.monotonic()
    while acked < args.count:
        room = min(window - (sent - acked), args.count - sent)
        if room >= window // 2 or (room > 0 and sent + room == args.count):
            c.sock.sendall(one * room)
            sent += room
        kind, _, payload = c.read_frame()
        if kind != 1:
            continue
        cm = struct.unpack_from(">HH", payload)
        if cm == (60, 80):
            tag, multiple = struct.unpack_from(">QB", payload, 4)
            acked = tag if multiple & 1 else max(acked, tag)
        elif cm == (60, 120):
            raise SystemExit("broker nacked a publish")
        elif cm in ((10, 50), (20, 40)):
            raise SystemExit("broker closed the channel or connection")
    elapsed = time.monotonic() - start
    print(f"published {args.count} x {args.size} B persistent, confirmed, in {elapsed:.1f} s "
          f"({args.count / elapsed:,.0f} msg/s)")


def drain(args):
    c = Conn(args.host, args.port)
    queue = args.queue.encode()
    messages, _ = c.declare(queue)
    c.sock.sendall(method(1, 60, 10, struct.pack(">IHB", 0, 1000, 0)))  # qos 1000
    c.expect(60, 11)
    c.sock.sendall(method(1, 60, 20, b"\x00\x00" + shortstr(queue) + shortstr(b"")
                          + b"\x00" + struct.pack(">I", 0)))
    c.expect(60, 21)
    want = args.count or messages
    got = 0
    start = time.monotonic()
    while got < want:
        kind, _, payload = c.read_frame()
        if kind == 1 and struct.unpack_from(">HH", payload) == (60, 60):
            got += 1
            if got % 500 == 0 or got == want:
                n = payload[4]
                tag, = struct.unpack_from(">Q", payload, 5 + n)
                c.sock.sendall(method(1, 60, 80, struct.pack(">QB", tag, 1)))
    elapsed = time.monotonic() - start
    print(f"drained {got} messages (queue held {messages}) in {elapsed:.1f} s "
          f"({got / elapsed:,.0f} msg/s)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["publish", "drain"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5672)
    p.add_argument("--queue", default="backlog")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=2000)
    args = p.parse_args()
    if args.mode == "publish":
        publish(args)
    else:
        drain(args)


if __name__ == "__main__":
    sys.exit(main())
