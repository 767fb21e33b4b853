#!/usr/bin/env python3
"""Soak test: a mixed workload against one broker for a while, killed with SIGKILL at
random moments and restarted on the same data dir, then a Jepsen-style check of what a
durable queue gave back against what was confirmed.

Workload (each part a thread with its own connection, reconnecting after every kill):
  - a confirming publisher of persistent messages to a durable queue (ids in the body);
  - a publisher of transient messages to a second queue;
  - a consumer of the durable queue with manual acks that stalls now and then and
    resumes;
  - an auto-ack consumer of the transient queue;
  - a transaction client that publishes 1 MiB bodies and never commits (the broker
    closes its channel at the transaction cap; it opens another);
  - connection churn: connections opened and closed in a loop.

Checked at the end (the durable queue drained to empty after the last restart):
  lost       = confirmed ids never received           (must be 0)
  unexpected = received ids never published           (must be 0)
  duplicated = ids received more than once            (reported; allowed after a kill)
and the broker's resident memory: sampled every second, its peak must stay under the
watermark, and the last third of the run must not sit far above the first (flat).

  scripts/soak.py --duration 300 --kills 20          # the long run (not in CI)
  scripts/soak.py --duration 60 --kills 4            # what scripts/test.sh runs
BROKER_BIN selects the broker (default target/debug/broker)."""
import argparse
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pika

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURABLE, TRANSIENT, TXQ = "soak-durable", "soak-transient", "soak-tx"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Broker:
    def __init__(self, binary, watermark):
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="broker-soak-")
        self.watermark = watermark
        self.log = open(self.dir + ".log", "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir,
             "--http-listen", "none", "--memory-high-watermark", self.watermark, "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("soak: the broker did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def rss(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Soak:
    def __init__(self, broker, deadline):
        self.b = broker
        self.deadline = deadline
        self.lock = threading.Lock()
        self.published = set()   # ids of every durable publish attempted
        self.confirmed = set()   # ids the broker confirmed
        self.nacked = set()
        self.received = collections.Counter()
        self.stalled = threading.Event()
        self.errors = collections.Counter()

    def connect(self):
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.b.port, credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1, socket_timeout=5, blocked_connection_timeout=30, heartbeat=0))

    def running(self):
        return time.monotonic() < self.deadline

    def loop(self, name, body):
        while self.running():
            try:
                body()
            except Exception as e:  # a kill drops every connection: reconnect
                self.errors[f"{name}: {type(e).__name__}"] += 1
                time.sleep(0.2)

    def declare(self, ch):
        ch.queue_declare(DURABLE, durable=True)
        ch.queue_declare(TRANSIENT)
        ch.queue_declare(TXQ)

    def durable_publisher(self):
        c = self.connect()
        ch = c.channel()
        self.declare(ch)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        while self.running():
            with self.lock:
                i = len(self.published)
                self.published.add(i)
            try:
                ch.basic_publish("", DURABLE, b"%d|" % i + b"d" * random.choice((10, 1000, 20000)), props)
                with self.lock:
                    self.confirmed.add(i)
            except pika.exceptions.NackError:
                with self.lock:
                    self.nacked.add(i)
        c.close()

    def transient_publisher(self):
        c = self.connect()
        ch = c.channel()
        self.declare(ch)
        while self.running():
            for _ in range(50):
                ch.basic_publish("", TRANSIENT, b"t" * 1000)
            c.process_data_events(0)
        c.close()

    def durable_consumer(self):
        c = self.connect()
        ch = c.channel()
        self.declare(ch)
        ch.basic_qos(prefetch_count=200)
        while self.running():
            if random.random() < 0.05:
                # stall: nothing read or acked for a while (the backlog grows)
                self.stalled.set()
                time.sleep(random.uniform(0.5, 2))
                self.stalled.clear()
            for m, _, body in ch.consume(DURABLE, inactivity_timeout=0.2):
                if m is None:
                    break
                self.note(body)
                ch.basic_ack(m.delivery_tag)
                if random.random() < 0.01:
                    break
            ch.cancel()
        c.close()

    def note(self, body):
        i = int(body.split(b"|", 1)[0])
        with self.lock:
            self.received[i] += 1

    def transient_consumer(self):
        c = self.connect()
        ch = c.channel()
        self.declare(ch)
        ch.basic_consume(TRANSIENT, lambda *a: None, auto_ack=True)
        while self.running():
            c.process_data_events(0.5)
        c.close()

    def tx_never_commits(self):
        c = self.connect()
        while self.running():
            ch = c.channel()
            ch.tx_select()
            try:
                for _ in range(80):
                    ch.basic_publish("", TXQ, b"x" * (1 << 20))
                    c.process_data_events(0)
                    if not self.running():
                        break
                time.sleep(0.5)
            except pika.exceptions.ChannelClosedByBroker as e:
                self.errors[f"tx: closed {e.reply_code}"] += 1
            except pika.exceptions.ChannelWrongStateError:
                # the broker's channel.close arrived while pika was publishing
                self.errors["tx: closed"] += 1
        c.close()

    def churn(self):
        while self.running():
            c = self.connect()
            c.channel().queue_declare(DURABLE, durable=True, passive=True)
            c.close()
            time.sleep(0.05)

    def drain(self):
        """After the last restart: everything left in the durable queue."""
        for _ in range(60):
            try:
                c = self.connect()
                break
            except Exception:
                time.sleep(0.5)
        ch = c.channel()
        ch.basic_qos(prefetch_count=500)
        for m, _, body in ch.consume(DURABLE, inactivity_timeout=3):
            if m is None:
                break
            self.note(body)
            ch.basic_ack(m.delivery_tag)
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--watermark", default="512MiB")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    binary = os.environ.get("BROKER_BIN", os.path.join(ROOT, "target", "debug", "broker"))
    limit = int(a.watermark[:-3]) << 20 if a.watermark.endswith("MiB") else int(a.watermark)
    b = Broker(binary, a.watermark)
    b.start()
    start = time.monotonic()
    s = Soak(b, start + a.duration)
    threads = [threading.Thread(target=s.loop, args=(f.__name__, f), daemon=True)
               for f in (s.durable_publisher, s.transient_publisher, s.durable_consumer,
                         s.transient_consumer, s.tx_never_commits, s.churn)]
    for t in threads:
        t.start()
    kills = sorted(random.uniform(0.05, 0.9) * a.duration for _ in range(a.kills))
    samples = []
    while s.running():
        now = time.monotonic() - start
        if kills and now >= kills[0]:
            kills.pop(0)
            b.kill9()
            b.start()
        rss = b.rss()
        if rss:
            samples.append((now, rss))
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=30)
    b.kill9()
    b.start()
    s.drain()
    b.stop()

    lost = s.confirmed - set(s.received)
    unexpected = set(s.received) - s.published
    duplicated = sum(1 for n in s.received.values() if n > 1)
    peak = max(r for _, r in samples)
    third = max(1, len(samples) // 3)
    first = max(r for _, r in samples[:third])
    last = max(r for _, r in samples[-third:])
    print(f"soak: seed {seed}, {a.duration:.0f} s, {a.kills} kills")
    print(f"  published {len(s.published)}, confirmed {len(s.confirmed)}, nacked {len(s.nacked)}, "
          f"received {len(s.received)} distinct")
    print(f"  lost {len(lost)}, unexpected {len(unexpected)}, duplicated {duplicated}")
    print(f"  RSS peak {peak >> 20} MiB (watermark {limit >> 20} MiB), first third {first >> 20} MiB, "
          f"last third {last >> 20} MiB")
    print(f"  reconnects: {dict(s.errors)}")
    ok = True
    if lost or unexpected:
        print(f"FAIL: lost {sorted(lost)[:20]}, unexpected {sorted(unexpected)[:20]}")
        ok = False
    if peak >= limit:
        print("FAIL: RSS reached the watermark")
        ok = False
    if last > first * 1.5 + (32 << 20):
        print("FAIL: RSS grew over the run")
        ok = False
    if not s.confirmed:
        print("FAIL: nothing was confirmed")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
