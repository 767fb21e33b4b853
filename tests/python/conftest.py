"""Fixtures for the pika suite: a broker process on a free port, and connections to it.

The session fixture `broker` starts the broker binary (BROKER_BIN, else
<repo>/target/debug/broker, else <repo>/target/release/broker) with
`--listen 127.0.0.1:PORT --data-dir TMP`, waits until it says it is listening and
the port accepts connections, yields the port, and stops it at the end (SIGTERM,
then SIGKILL).

Set AMQP_TEST_PORT=5673 (for example) to run the same suite against a broker that
is already running on 127.0.0.1 instead, e.g. a reference RabbitMQ: the tests are
written against RabbitMQ's behaviour and must pass there too. Tests that need a
broker of our own (for special command-line flags) are skipped in that mode.

Tests marked `ours_only` check behaviour of our broker that deliberately differs from
RabbitMQ 3.10 (amq.dead-letter, x-delivery-limit on classic queues, consumer timeout by
basic.cancel, ...): they are skipped when AMQP_TEST_PORT is set.

Tests marked `slow` are skipped unless RUN_SLOW=1 or `--runslow` is given.

The cluster tests (tests/python/test_cluster_*.py) share two fixtures over
tests/cluster/harness.py: `cluster` (three broker processes for a whole module) and
`fresh_cluster` (three new ones per test, for fault schedules that leave a node
restarted or a leader moved).
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pika
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


# --------------------------------------------------------------------------- options


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~12 s; skipped unless --runslow or RUN_SLOW=1")
    config.addinivalue_line("markers", "own_broker: needs a broker process started by the suite")
    config.addinivalue_line(
        "markers", "ours_only: behaviour of our broker that deliberately differs from RabbitMQ 3.10; "
        "skipped when AMQP_TEST_PORT is set")


def pytest_collection_modifyitems(config, items):
    if external_port() is not None:
        ours = pytest.mark.skip(reason="ours_only: our broker deliberately differs from RabbitMQ 3.10 here")
        for item in items:
            if "ours_only" in item.keywords:
                item.add_marker(ours)
    if config.getoption("--runslow") or os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: use --runslow or RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------- broker process


def broker_bin():
    env = os.environ.get("BROKER_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise RuntimeError(f"BROKER_BIN={env!r} is not an executable file")
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "broker"
        if p.exists():
            return str(p)
    raise RuntimeError("broker binary not found: build it (cargo build --bin broker) or set BROKER_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class BrokerProcess:
    """One broker process with its own data dir; `port` is where it listens."""

    def __init__(self, extra_args=()):
        self.binary = broker_bin()
        self.extra_args = tuple(extra_args)
        if not any(a.startswith("--http-listen") for a in self.extra_args):
            self.extra_args += ("--http-listen", "127.0.0.1:0")
        self.http_url = None
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="broker-pika-")
        self.log_path = self.data_dir + ".log"
        self.log = open(self.log_path, "wb")
        for attempt in range(3):
            try:
                self._launch()
                return
            except RuntimeError:
                # the port picked was taken before the broker bound it (another broker's
                # HTTP listener or a client's ephemeral port): start again on a new one
                if attempt == 2 or "Address already in use" not in self.log_tail():
                    self.stop()
                    raise
                self.port = free_port()

    def _launch(self):
        self.proc = subprocess.Popen(
            [self.binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir, *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        self._ready = threading.Event()
        self._lines = []
        # Read stdout on a thread: gives a deadline to the wait for the banner, and keeps the
        # pipe drained for the rest of the run.
        threading.Thread(target=self._pump, args=(self.proc, self._ready, self._lines), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        ok = self._ready.wait(START_TIMEOUT) and wait_for_port(self.port, deadline)
        if not ok:
            self.terminate()
            raise RuntimeError(
                f"broker did not start on port {self.port}: stdout={self._lines!r}\n" + self.log_tail()
            )

    def _pump(self, proc, ready, lines):
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            lines.append(line)
            if line.startswith("management API listening on "):
                self.http_url = line.split(" on ", 1)[1].strip()
            if f"broker listening on 127.0.0.1:{self.port}" in line:
                ready.set()
        ready.set()  # EOF: the process is gone; let the waiter notice

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def terminate(self):
        """SIGTERM (SIGKILL after 5 s); the data dir and the log stay."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def restart(self):
        """Stops the broker with SIGTERM and starts it again on the same port and data dir."""
        self.terminate()
        self._launch()

    def stop(self):
        self.terminate()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def external_port():
    p = os.environ.get("AMQP_TEST_PORT")
    return int(p) if p else None


@pytest.fixture(scope="session")
def broker_process():
    """The broker process under test, or None when testing an external broker."""
    if external_port() is not None:
        yield None
        return
    b = BrokerProcess()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def broker(broker_process):
    """Port of the broker under test on 127.0.0.1."""
    port = external_port()
    return port if port is not None else broker_process.port


@pytest.fixture(scope="session")
def http_url(broker_process):
    """Base URL of the management HTTP API of the broker under test (for broker-cli).

    BROKER_CLI_TEST_URL when set (e.g. http://127.0.0.1:15673 for the reference
    RabbitMQ, together with AMQP_TEST_PORT=5673 so that `broker` is the same broker);
    otherwise skipped until the broker started by `broker` serves the API."""
    url = os.environ.get("BROKER_CLI_TEST_URL")
    if url:
        return url
    if broker_process is not None and broker_process.http_url:
        return broker_process.http_url
    pytest.skip("no management API")


@pytest.fixture
def own_broker_factory():
    """Starts extra broker processes with extra command-line flags (skipped against an external broker)."""
    if external_port() is not None:
        pytest.skip("needs a broker process started by the suite")
    started = []

    def start(*extra_args):
        b = BrokerProcess(extra_args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


# --------------------------------------------------------------------------- connections


def connect(port, **kw):
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=10,
        **kw,
    )
    return pika.BlockingConnection(params)


@pytest.fixture
def conn(broker):
    c = connect(broker)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def connect_more(broker):
    """Opens further connections for a test; all of them are closed afterwards."""
    opened = []

    def make():
        c = connect(broker)
        opened.append(c)
        return c

    yield make
    for c in opened:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


class Scratch:
    """Names for the queues and exchanges of one test, deleted when the test ends (the suite
    can run against a long-lived broker, where anything left behind would pile up)."""

    def __init__(self):
        self.queues, self.exchanges = [], []

    def queue(self, prefix="q"):
        name = uniq(prefix)
        self.queues.append(name)
        return name

    def exchange(self, prefix="x"):
        name = uniq(prefix)
        self.exchanges.append(name)
        return name

    def cleanup(self, port):
        if not (self.queues or self.exchanges):
            return
        try:
            c = connect(port)
        except Exception:
            return
        try:
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in names:
                    try:
                        ch = c.channel()
                        getattr(ch, f"{kind}_delete")(name)
                        ch.close()
                    except Exception:
                        pass
        finally:
            if c.is_open:
                c.close()


@pytest.fixture
def scratch(broker):
    s = Scratch()
    yield s
    s.cleanup(broker)


# --------------------------------------------------------------------------- helpers


def uniq(prefix):
    """A name no earlier run has used (the suite can run against a long-lived broker)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def pump_until(conns, predicate, timeout=5.0):
    """Processes I/O on the given blocking connections until predicate() is true.

    Returns predicate()'s final value; callers assert on it."""
    if not isinstance(conns, (list, tuple)):
        conns = [conns]
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        for c in conns:
            c.process_data_events(time_limit=0.02 if len(conns) > 1 else 0.05)


def get_n(ch, queue, n, timeout=5.0, auto_ack=True):
    """basic.get until n messages arrived; returns [(method, props, body)]."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            ch.connection.process_data_events(time_limit=0.01)
            continue
        out.append((method, props, body))
    return out


def bodies(ch, queue, n, timeout=5.0):
    return [b for _, _, b in get_n(ch, queue, n, timeout)]


def ready_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def round_trip(conn_or_ch):
    """Proves a connection (or channel) still works: declare, publish, get back."""
    ch = conn_or_ch.channel() if isinstance(conn_or_ch, pika.BlockingConnection) else conn_or_ch
    q = ch.queue_declare("", exclusive=True).method.queue
    token = uuid.uuid4().bytes
    ch.basic_publish("", q, token)
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and body == token, "connection/channel no longer works"
    ch.queue_delete(q)


# --------------------------------------------------------------------------- clusters


def _three_nodes():
    """Three broker processes formed into a cluster (tests/cluster/harness.py), removed
    afterwards with their data dirs."""
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "cluster"))
    from harness import Cluster

    c = Cluster(3)
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def cluster():
    """A three-node cluster shared by the tests of one module."""
    yield from _three_nodes()


@pytest.fixture
def fresh_cluster():
    """A three-node cluster of its own for one test (fault schedules)."""
    yield from _three_nodes()
