"""Brokers as processes for the cluster tests (issue 16): each node with its own ports
(AMQP, management API, cluster link) and data dir, on 127.0.0.1, or each in a network
namespace of its own (tests/cluster/netns.py) when a test partitions the network.

A node of a one-node "cluster" is started without cluster flags (a single broker is a
cluster of one); larger clusters pass every node the others as `--cluster-peers`, with a
shared `--cluster-secret-file`. Faults: `kill9`, `stop` (SIGSTOP: the process freezes,
its sockets stay open), `cont`, `restart` (same ports and data dir)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pika

# what a poll may meet while a cluster changes: a node not answering yet, a listing
# without the entry yet, a connection refused or closed, a check not true yet
POLL_ERRORS = (OSError, ValueError, KeyError, AssertionError, pika.exceptions.AMQPError)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def broker_bin():
    env = os.environ.get("BROKER_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = os.path.join(ROOT, "target", profile, "broker")
        if os.path.exists(p):
            return p
    raise RuntimeError("broker binary not found: build it or set BROKER_BIN")


def eventually(check, timeout=20.0, what="condition", interval=0.05):
    """Polls `check` until it returns a truthy value (returned) or the deadline passes
    (then AssertionError naming `what` and the last value or error)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except POLL_ERRORS as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def channel(node, **params):
    """A pika connection to `node` (more `pika.ConnectionParameters` in `params`) and a
    channel on it."""
    conn = pika.BlockingConnection(pika.ConnectionParameters(node.host, node.port, connection_attempts=3, **params))
    return conn, conn.channel()


def declare_on(home, others, name, **kw):
    """Declares a durable queue on `home` and waits until each of `others` lists it."""
    conn, ch = channel(home)
    ch.queue_declare(name, durable=True, **kw)
    conn.close()
    for node in others:
        eventually(lambda: any(q["name"] == name for q in node.api("/api/queues/%2F")), what=f"{name} on {node.name}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One broker process of the cluster."""

    def __init__(self, index, name, host, secret_file=None, net=None, extra_args=()):
        self.index = index
        # appended to the command line (e.g. --cluster-tls-* files)
        self.extra_args = list(extra_args)
        self.name = name
        self.host = host
        self.net = net
        # inside a namespace every node has its own address, so the ports can be fixed
        if net is None:
            self.port, self.http_port, self.cluster_port = free_port(), free_port(), free_port()
        else:
            self.port, self.http_port, self.cluster_port = 5672, 15672, 25672
        self.secret_file = secret_file
        self.peers = []
        self.data_dir = tempfile.mkdtemp(prefix=f"broker-cluster-{index}-")
        self.log_path = self.data_dir + ".log"
        self.proc = None

    @property
    def http_url(self):
        return f"http://{self.host}:{self.http_port}"

    def argv(self):
        a = [broker_bin(), "--node-name", self.name, "--data-dir", self.data_dir,
             "--listen", f"{self.host}:{self.port}", "--http-listen", f"{self.host}:{self.http_port}"]
        if self.net is not None:
            # the clients reach a namespaced node through the bridge, not its loopback
            a += ["--loopback-users", "none"]
        if self.peers:
            a += ["--cluster-listen", f"{self.host}:{self.cluster_port}",
                  "--cluster-peers", ",".join(self.peers), "--cluster-secret-file", self.secret_file]
        return a + self.extra_args

    def start(self, timeout=30):
        argv = self.argv()
        if self.net is not None:
            argv = self.net.wrap(self.index, argv)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited at start:\n{self.log_tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node {self.name} did not start:\n{self.log_tail()}")

    def serves_amqp(self, timeout=1.0):
        """Whether the node answers an AMQP protocol header with connection.start (it
        binds its port early, but accepts clients only once it has recovered)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(1)[:1] == b"\x01"
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        """SIGSTOP: frozen, as a node that stops being scheduled."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self):
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.terminate()
        self.start()

    def api(self, path, timeout=5):
        req = urllib.request.Request(self.http_url + path)
        req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def remove(self):
        self.kill9()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class Cluster:
    """`n` nodes named broker-<i>@cluster, started together (each lists the others as
    peers when n > 1). With `net` (a netns.Net of n nodes) each runs in its namespace.
    `node_args(i)`, when given, is the list of extra arguments of node i."""

    def __init__(self, n, net=None, node_args=None):
        self.net = net
        self.secret_dir = tempfile.mkdtemp(prefix="broker-cluster-secret-")
        secret = os.path.join(self.secret_dir, "secret")
        with open(secret, "w") as f:
            f.write(os.urandom(24).hex())
        os.chmod(secret, 0o600)
        self.nodes = []
        for i in range(n):
            host = net.addr(i) if net else "127.0.0.1"
            extra = node_args(i) if node_args else ()
            self.nodes.append(Node(i, f"broker-{i}@cluster", host, secret, net, extra))
        if n > 1:
            for node in self.nodes:
                node.peers = [f"{o.name}@{o.host}:{o.cluster_port}" for o in self.nodes if o is not node]

    def start(self, timeout=60):
        for node in self.nodes:
            node.start()
        if len(self.nodes) > 1:
            self.wait_formed(timeout)

    def wait_formed(self, timeout=60):
        """Until every node's /api/nodes lists every node as running and a member of the
        metadata group, and every live node serves AMQP (a node answers its management
        API while it waits for its peers, and clients only once it caught up)."""
        want = {n.name for n in self.nodes}
        deadline = time.monotonic() + timeout
        while True:
            try:
                ok = all({x["name"] for x in n.api("/api/nodes")
                          if x.get("running") and x.get("metadata_member", True)} == want
                         for n in self.nodes if n.alive())
                if ok and all(n.serves_amqp() for n in self.nodes if n.alive()):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not form:\n" + "\n".join(n.log_tail(1500) for n in self.nodes))
            time.sleep(0.2)

    def leader_of(self, queue, vhost="%2F"):
        """The name of a quorum queue's leader, as any live node reports it."""
        for n in self.nodes:
            if n.alive():
                try:
                    return n.api(f"/api/queues/{vhost}/{queue}").get("leader")
                except OSError:
                    continue
        return None

    def node_named(self, name):
        return next(n for n in self.nodes if n.name == name)

    def close(self):
        for n in self.nodes:
            n.remove()
        shutil.rmtree(self.secret_dir, ignore_errors=True)
