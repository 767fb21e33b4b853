"""A Jepsen-style checker for the cluster (issue 16): confirming publishers with unique
ids and consumers recording every delivery run against every node while faults are
injected; then the faults heal, the queue is drained, and the outcome is counted:

  lost       = ids confirmed (basic.ack) that no consumer ever received   (must be 0)
  unexpected = ids received that no publisher ever sent                   (must be 0)
  duplicated = ids received more than once                                (reported)

A publish whose connection died before its confirm is "unknown": it may or may not be
there, so it counts neither way. Consumers ack after recording, re-subscribe after a
basic.cancel or a lost connection, and move to another node when theirs is down.

Used by the suite's bounded run and by `scripts/jepsen.sh` (the long run)."""
import collections
import threading
import time

import pika


class Checker:
    def __init__(self, cluster, queue, arguments=None, publishers=None, body_size=256, durable=True):
        self.cluster = cluster
        self.durable = durable
        self.queue = queue
        self.arguments = arguments or {}
        self.publishers = publishers or len(cluster.nodes)
        self.body_pad = b"x" * body_size
        self.lock = threading.Lock()
        self.sent, self.acked, self.nacked, self.unknown = set(), set(), set(), set()
        self.received = collections.Counter()
        self.errors = collections.Counter()
        self.publishing = threading.Event()
        self.consuming = threading.Event()
        self.last_delivery = time.monotonic()
        # (sent at, confirmed at, node) of recent confirms, for `failover_after`
        self.confirms = collections.deque(maxlen=100_000)
        self.threads = []

    # ------------------------------------------------------------------ connections

    def connect(self, start):
        """A connection to the first live node from `start` on (round robin)."""
        return self.connect_node(start)[1]

    def connect_node(self, start):
        """(node, connection) to the first live node from `start` on (round robin)."""
        nodes = self.cluster.nodes
        last = None
        for k in range(len(nodes)):
            n = nodes[(start + k) % len(nodes)]
            if not n.alive():
                continue
            try:
                return n, pika.BlockingConnection(pika.ConnectionParameters(
                    n.host, n.port, credentials=pika.PlainCredentials("guest", "guest"),
                    connection_attempts=1, socket_timeout=3, blocked_connection_timeout=20,
                    heartbeat=5))
            except Exception as e:  # down, frozen or cut off: try the next
                last = e
        raise ConnectionError(f"no node reachable ({last})")

    def declare(self):
        c = self.connect(0)
        try:
            c.channel().queue_declare(self.queue, durable=self.durable, arguments=self.arguments)
        finally:
            c.close()

    # ------------------------------------------------------------------ workload

    def publisher(self, k):
        seq = 0
        while self.publishing.is_set():
            try:
                node, c = self.connect_node(k)
                ch = c.channel()
                ch.confirm_delivery()
                props = pika.BasicProperties(delivery_mode=2)
                while self.publishing.is_set():
                    seq += 1
                    mid = f"p{k}-{seq}"
                    with self.lock:
                        self.sent.add(mid)
                    at = time.monotonic()
                    try:
                        ch.basic_publish("", self.queue, mid.encode() + b"|" + self.body_pad, props)
                    except pika.exceptions.NackError:
                        with self.lock:
                            self.nacked.add(mid)
                        continue
                    except Exception:
                        with self.lock:
                            self.unknown.add(mid)
                        raise
                    with self.lock:
                        self.acked.add(mid)
                        self.confirms.append((at, time.monotonic(), node.name))
                c.close()
            except Exception as e:
                self.errors[f"publisher: {type(e).__name__}"] += 1
                time.sleep(0.2)

    def consumer(self, k):
        while self.consuming.is_set():
            try:
                c = self.connect(k)
                ch = c.channel()
                ch.basic_qos(prefetch_count=50)
                for m, _, body in ch.consume(self.queue, inactivity_timeout=0.5):
                    if not self.consuming.is_set():
                        break
                    if m is None:
                        continue
                    mid = body.split(b"|", 1)[0].decode()
                    with self.lock:
                        self.received[mid] += 1
                        self.last_delivery = time.monotonic()
                    ch.basic_ack(m.delivery_tag)
                c.close()
            except Exception as e:
                self.errors[f"consumer: {type(e).__name__}"] += 1
                time.sleep(0.2)

    def failover_after(self, t, faulted):
        """Seconds from `t` (a fault) to the first confirm of a publish sent after it
        through a node other than `faulted`, or None if none came yet. A publisher waits
        for each confirm before it sends again, so this is how long publishing through
        the survivors stalled."""
        with self.lock:
            done = [c for a, c, n in self.confirms if a > t and n != faulted]
        return min(done) - t if done else None

    def start(self, consumers=True):
        """Declares the queue and starts the publishers, and the consumers unless told
        to wait (`start_consumers` later)."""
        self.declare()
        self.publishing.set()
        self._spawn(self.publisher, self.publishers)
        if consumers:
            self.start_consumers()

    def start_consumers(self):
        self.consuming.set()
        self._spawn(self.consumer, len(self.cluster.nodes))

    def stop_publishing(self):
        self.publishing.clear()

    def _spawn(self, target, n):
        for k in range(n):
            t = threading.Thread(target=target, args=(k,), daemon=True)
            self.threads.append(t)
            t.start()

    def finish(self, quiet=3.0, timeout=60.0):
        """Stops publishing, lets the consumers drain until nothing arrived for `quiet`
        seconds, and returns the report."""
        self.publishing.clear()
        if not self.consuming.is_set():
            self.start_consumers()
        self.last_delivery = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last_delivery
                missing = self.acked - set(self.received)
            if idle >= quiet and not missing:
                break
            if idle >= quiet * 4:
                break
            time.sleep(0.2)
        self.consuming.clear()
        for t in self.threads:
            t.join(10)
        return self.report()

    def report(self):
        with self.lock:
            got = set(self.received)
            return {
                "sent": len(self.sent),
                "acked": len(self.acked),
                "nacked": len(self.nacked),
                "unknown": len(self.unknown),
                "received": len(got),
                "lost": sorted(self.acked - got)[:20],
                "lost_count": len(self.acked - got),
                "unexpected": sorted(got - self.sent)[:20],
                "unexpected_count": len(got - self.sent),
                "duplicated": sum(1 for v in self.received.values() if v > 1),
                "errors": dict(self.errors),
            }
