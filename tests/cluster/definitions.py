"""A Jepsen-style workload and checker for the cluster's definitions (the metadata group,
issue 16): one client per node declares durable queues, exchanges and bindings with
unique names, deletes some of them, and records every answer; after the faults heal,
every node must list the same definitions, and the outcome is counted:

  lost          = acknowledged definitions (declare-ok, bind-ok) some node does not list
                  (must be 0)
  unexpected    = listed definitions of this run that no client ever asked for (must be 0)
  resurrected   = acknowledged deletes whose entity is listed again (must be 0)
  indeterminate = requests that got an error or no answer: they may or may not have
                  taken effect (reported; they count neither way)

A client stays on its node while that node answers and moves to the next live node when
its connection breaks. Queues are deleted only through their home node (a queue is
used from its home node only until remote queues land, docs/design/cluster.md §11), so
a delete never meets the fence's 404.

`conflicting_declares` is the split-brain probe: the same queue name declared with
different arguments through two nodes at once; at most one shape may be answered
declare-ok, and afterwards every node lists that shape.

Used by tests/python/test_cluster_faults.py (bounded) and scripts/jepsen.sh (long)."""
import threading
import time
import uuid

import pika
from pika.exceptions import AMQPChannelError, ChannelClosedByBroker


def connect(node, heartbeat=2):
    """A connection to `node`, failing fast when it is down, frozen or cut off."""
    return pika.BlockingConnection(pika.ConnectionParameters(
        node.host, node.port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=2, blocked_connection_timeout=20, heartbeat=heartbeat))


class DefinitionsChecker:
    """Runs `clients` workers (one per node by default) until `stop()`; `check()` then
    compares what every node lists with what the workers were told."""

    def __init__(self, cluster, clients=None, tag=None):
        self.cluster = cluster
        self.tag = tag or f"dj{uuid.uuid4().hex[:6]}"
        self.clients = clients or len(cluster.nodes)
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.threads = []
        # name -> home node name (queues), names (exchanges), (x, q, key) (bindings)
        self.sent = {"queue": set(), "exchange": set(), "binding": set()}
        self.acked = {"queue": {}, "exchange": set(), "binding": set()}
        self.deleted = {"queue": set(), "exchange": set()}
        self.indeterminate = {"queue": set(), "exchange": set(), "binding": set()}
        # (started, answered, node name) of every declare-ok, for the failover time
        self.successes = []
        self.errors = {}

    # ------------------------------------------------------------------ workload

    def _note_error(self, what, e):
        key = f"{what}: {type(e).__name__}" + (f" {e.reply_code}" if isinstance(e, ChannelClosedByBroker) else "")
        with self.lock:
            self.errors[key] = self.errors.get(key, 0) + 1

    def _do(self, kind, name, node, call):
        """Runs one request; records the outcome; returns whether it was answered ok.
        A channel error leaves the connection usable (the caller opens a new channel)."""
        with self.lock:
            if not kind.startswith("delete"):
                self.sent[kind].add(name)
        started = time.monotonic()
        try:
            call()
        except Exception as e:
            with self.lock:
                self.indeterminate[kind.replace("delete-", "")].add(name)
            self._note_error(kind, e)
            raise
        with self.lock:
            self.successes.append((started, time.monotonic(), node.name))
        return True

    def _step(self, k, seq, node, ch, mine):
        """One operation of worker k: mostly declares, a bind per pair, a delete now and
        then (of something this worker declared and its node homes)."""
        q, x = f"{self.tag}.q.{k}.{seq}", f"{self.tag}.x.{k}.{seq}"
        self._do("queue", q, node, lambda: ch.queue_declare(q, durable=True))
        with self.lock:
            self.acked["queue"][q] = node.name
        self._do("exchange", x, node, lambda: ch.exchange_declare(x, "direct", durable=True))
        with self.lock:
            self.acked["exchange"].add(x)
        b = (x, q, f"k{seq}")
        self._do("binding", b, node, lambda: ch.queue_bind(q, x, routing_key=b[2]))
        with self.lock:
            self.acked["binding"].add(b)
        mine.append((q, x, node.name))
        if seq % 4 == 0 and len(mine) > 2:
            dq, dx, home = mine.pop(0)
            self._do("delete-exchange", dx, node, lambda: ch.exchange_delete(dx))
            with self.lock:
                self.deleted["exchange"].add(dx)
            if home == node.name:
                self._do("delete-queue", dq, node, lambda: ch.queue_delete(dq))
                with self.lock:
                    self.deleted["queue"].add(dq)

    def worker(self, k):
        seq = 0
        mine = []
        start = k % len(self.cluster.nodes)
        while self.running.is_set():
            node = self._pick(start)
            if node is None:
                time.sleep(0.1)
                continue
            try:
                conn = connect(node)
            except Exception as e:
                self._note_error("connect", e)
                start += 1
                continue
            try:
                ch = conn.channel()
                while self.running.is_set():
                    seq += 1
                    try:
                        self._step(k, seq, node, ch, mine)
                    except (ChannelClosedByBroker, AMQPChannelError):
                        ch = conn.channel()
            except Exception:
                start += 1  # the node went away: go on through the next one
            finally:
                try:
                    conn.close()
                except Exception:
                    pass

    def _pick(self, start):
        nodes = self.cluster.nodes
        for i in range(len(nodes)):
            n = nodes[(start + i) % len(nodes)]
            if n.alive():
                return n
        return None

    def start(self):
        self.running.set()
        for k in range(self.clients):
            t = threading.Thread(target=self.worker, args=(k,), daemon=True)
            self.threads.append(t)
            t.start()

    def stop(self, timeout=30):
        self.running.clear()
        for t in self.threads:
            t.join(timeout)

    def failover_after(self, t_fault, faulted=None):
        """Seconds from `t_fault` (monotonic) to the first declare-ok that was asked
        after it, through a node other than `faulted`; None if there was none."""
        with self.lock:
            done = [end for (start, end, n) in self.successes if start >= t_fault and n != faulted]
        return min(done) - t_fault if done else None

    def acked_count(self):
        with self.lock:
            return len(self.acked["queue"]) + len(self.acked["exchange"]) + len(self.acked["binding"])

    # ------------------------------------------------------------------ checking

    def listed(self, node):
        """What `node` lists of this run: queue names, exchange names, bindings."""
        prefix = self.tag + "."
        qs = {q["name"] for q in node.api("/api/queues/%2F", timeout=10) if q["name"].startswith(prefix)}
        xs = {x["name"] for x in node.api("/api/exchanges/%2F", timeout=10) if x["name"].startswith(prefix)}
        bs = {(b["source"], b["destination"], b["routing_key"]) for b in node.api("/api/bindings/%2F", timeout=10)
              if b["source"].startswith(prefix)}
        return {"queue": qs, "exchange": xs, "binding": bs}

    def expected(self):
        """What must be listed: acknowledged and neither deleted nor possibly deleted."""
        with self.lock:
            gone_q = self.deleted["queue"] | self.indeterminate["queue"]
            gone_x = self.deleted["exchange"] | self.indeterminate["exchange"]
            qs = set(self.acked["queue"]) - gone_q
            xs = self.acked["exchange"] - gone_x
            bs = {b for b in self.acked["binding"] if b[0] in xs and b[1] in qs}
            return {"queue": qs, "exchange": xs, "binding": bs}

    def check(self, timeout=30):
        """Waits until every node lists the same definitions (or the timeout), then
        returns the report of every node."""
        deadline = time.monotonic() + timeout
        while True:
            views = {}
            try:
                views = {n.name: self.listed(n) for n in self.cluster.nodes}
            except (OSError, ValueError):
                pass
            agree = len(views) == len(self.cluster.nodes) and all(v == next(iter(views.values()))
                                                                  for v in views.values())
            if views and (agree and not self._report(views)["lost_count"] or time.monotonic() > deadline):
                return self._report(views, agree)
            if time.monotonic() > deadline:
                raise AssertionError("no node answered its management API")
            time.sleep(0.2)

    def _report(self, views, agree=False):
        want = self.expected()
        with self.lock:
            sent = {k: set(v) for k, v in self.sent.items()}
            deleted = {k: set(v) for k, v in self.deleted.items()}
            indet = sum(len(v) for v in self.indeterminate.values())
            acked = sum(len(v) for v in self.acked.values())
            errors = dict(self.errors)
        lost, unexpected, resurrected = [], [], []
        for node, view in views.items():
            for kind in ("queue", "exchange", "binding"):
                lost += [(node, kind, x) for x in want[kind] - view[kind]]
                unexpected += [(node, kind, x) for x in view[kind] - sent[kind]]
                if kind != "binding":
                    resurrected += [(node, kind, x) for x in view[kind] & deleted[kind]]
        names = list(views)
        disagree = [(names[0], n, k, sorted(views[names[0]][k] ^ views[n][k])[:5]) for n in names[1:]
                    for k in ("queue", "exchange", "binding") if views[names[0]][k] != views[n][k]]
        return {"acked": acked, "indeterminate": indet, "deleted": sum(len(v) for v in deleted.values()),
                "nodes_agree": agree, "disagree": disagree[:6], "lost": lost[:20], "lost_count": len(lost),
                "unexpected": unexpected[:20], "unexpected_count": len(unexpected),
                "resurrected": resurrected[:20], "resurrected_count": len(resurrected), "errors": errors}


def conflicting_declares(a, b, name, args_a, args_b, ready=None):
    """Declares queue `name` through nodes `a` and `b` at the same moment, with different
    arguments; returns each side's answer ("ok", a reply code, or the exception's name).
    `ready`, if given, is called once both connections are open (e.g. to inject a fault
    before the declares go out)."""
    conns = [connect(a, heartbeat=0), connect(b, heartbeat=0)]
    chans = [c.channel() for c in conns]
    if ready:
        ready()
    barrier = threading.Barrier(2)
    out = [None, None]

    def side(i, args):
        barrier.wait()
        try:
            chans[i].queue_declare(name, durable=True, arguments=args)
            out[i] = "ok"
        except ChannelClosedByBroker as e:
            out[i] = e.reply_code
        except Exception as e:
            out[i] = type(e).__name__

    ts = [threading.Thread(target=side, args=(0, args_a)), threading.Thread(target=side, args=(1, args_b))]
    for t in ts:
        t.start()
    return out, ts, conns


def finish_conflict(ts, conns, timeout=40):
    for t in ts:
        t.join(timeout)
    for c in conns:
        try:
            c.close()
        except Exception:
            pass


def queue_arguments(node, name):
    """The arguments `node` lists for queue `name` (None if it lists no such queue)."""
    for q in node.api("/api/queues/%2F", timeout=10):
        if q["name"] == name:
            return q.get("arguments", {})
    return None
